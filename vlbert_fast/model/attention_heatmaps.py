"""Per-layer, per-head attention over the text and the RoIs of given inputs, as PNG heatmaps and raw arrays
(`vlbert-fast attention-maps`, whose docstring says what is written).

The maps come from the padded reference path (plain PyTorch attention, which returns its probabilities), in eval
mode, on samples built as training builds them, without masking. The weights come through `resolve_weights`
(model/pretrained.py): an export, a run or checkpoint of ours (any ZeRO stage, the fp32 masters of a bf16/fp16 run),
or a state-dict file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig
from ..data import collate
from ..data.caption_dataset import CaptionDataset, RegionSource, image_id_of
from ..data.formats import CaptionRecord, read_cc_jsonl
from ..data.formats.paths import under
from ..data.pretrain_loader import resolve_root
from ..tokenization import Tokenizer
from .pretrained import check_state_dict, resolve_weights
from .vlbert import VLBertForPretraining

# viridis-like ramp (dark blue -> teal -> yellow), linearly interpolated: readable in print and for most colour vision
RAMP = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)


def load_model(cfg: RunConfig, checkpoint: str | None, trust_foreign: bool = False):
    """(model in eval mode, where its weights came from or None): `checkpoint`'s weights with the model config they
    were saved with (a bare state-dict file: `cfg.model`), or a random initialisation from `cfg` (seed `cfg.seed`)."""
    torch.manual_seed(cfg.seed)
    if not checkpoint:
        return VLBertForPretraining(cfg.model).eval(), None
    weights = resolve_weights(checkpoint, trust_foreign)
    model = VLBertForPretraining(weights.cfg or cfg.model).eval()
    check_state_dict(weights.state, model.state_dict(), f"weights in {weights.source}")
    model.load_state_dict(weights.state, strict=True)
    return model, weights.source


def build_samples(cfg: RunConfig, image_ids: list[str], captions: list[str]):
    """(root, tokenizer, [(image id, caption words, Example)]) for the requested inputs (module docstring)."""
    root = resolve_root(cfg)
    tokenizer = Tokenizer(under(root, cfg.data.tokenizer))
    if captions and len(captions) != len(image_ids):
        raise ValueError(f"got {len(captions)} --caption for {len(image_ids)} --image-id; give one per image or none")
    known = []
    for name in (cfg.data.val_captions, cfg.data.captions):
        if name and under(root, name).is_file():
            known += read_cc_jsonl(under(root, name))
    if not image_ids:
        if not known:
            raise ValueError(f"no --image-id given and no captions file under {root} to take one from")
        records = [known[0]]
    elif captions:
        records = [CaptionRecord(image=f"{i}.png", caption=c.split()) for i, c in zip(image_ids, captions, strict=True)]
    else:
        by_id = {image_id_of(r): r for r in reversed(known)}
        missing = [i for i in image_ids if i not in by_id]
        if missing:
            raise ValueError(f"images {missing} have no caption in the captions files under {root}; pass --caption")
        records = [by_id[i] for i in image_ids]
    dataset = CaptionDataset(
        records, RegionSource(root, cfg.data.features), tokenizer, cfg.data, source="attention-maps", masking=False,
        feature_dim=cfg.model.visual_feature_dim, num_classes=cfg.model.num_roi_classes,
    )  # fmt: skip
    return root, tokenizer, [(image_id_of(r), r.caption, dataset[k]) for k, r in enumerate(records)]


def token_labels(tokenizer, example) -> list[str]:
    words = tokenizer.convert_ids_to_tokens(example.input_ids.tolist())
    regions = ["[IMG] whole"] + [f"[RoI {k}]" for k in range(1, example.num_regions)]
    return [*words, *regions[: example.num_regions], "[END]"]


def colourise(values: np.ndarray) -> np.ndarray:
    """[n, n] in [0, 1] -> [n, n, 3] uint8 along RAMP."""
    position = np.clip(values, 0.0, 1.0) * (len(RAMP) - 1)
    low = np.floor(position).astype(int).clip(max=len(RAMP) - 2)
    frac = (position - low)[..., None]
    return (RAMP[low] * (1 - frac) + RAMP[low + 1] * frac).round().astype(np.uint8)


def heatmap(probs: np.ndarray, labels: list[str], bounds: list[int], cell: int, title: str):
    """A PIL image: the map scaled to its maximum, labels left (queries) and top (keys), segment lines."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    n = probs.shape[0]
    short = [label[:14] for label in labels]
    margin = 8 + 6 * max((len(s) for s in short), default=1)
    top = margin + 14
    peak = float(probs.max()) if probs.size else 1.0
    grid = Image.fromarray(colourise(probs / max(peak, 1e-12))).resize((n * cell, n * cell), Image.NEAREST)
    image = Image.new("RGB", (margin + n * cell + 2, top + n * cell + 2), "white")
    image.paste(grid, (margin, top))
    draw = ImageDraw.Draw(image)
    draw.text((2, 1), f"{title}  (max {peak:.3f})", fill="black", font=font)
    keys = Image.new("RGB", (margin, n * cell), "white")
    key_draw = ImageDraw.Draw(keys)
    for i, label in enumerate(short):
        y = top + i * cell + (cell - 10) // 2
        draw.text((2, y), label, fill="black", font=font)
        key_draw.text((2, i * cell + (cell - 10) // 2), label, fill="black", font=font)
    image.paste(keys.rotate(90, expand=True), (margin, 14))
    for b in bounds:  # between text / RoIs / [END]
        x, y = margin + b * cell, top + b * cell
        draw.line([(x, top), (x, top + n * cell)], fill="white", width=1)
        draw.line([(margin, y), (margin + n * cell, y)], fill="white", width=1)
    return image


def attention_probs(model, batch) -> list[np.ndarray]:
    """Per layer [B, heads, L, L] probabilities of the padded reference path."""
    vlbert = model.vlbert
    vlbert.validate(batch)
    with torch.no_grad():
        embedded = vlbert.embeddings(batch, vlbert.region_features(batch))
        _, probs = vlbert.encoder(embedded, batch.attention_mask, return_probs=True)
    return [p.float().numpy() for p in probs]


def write_maps(model, tokenizer, samples, out: Path, cell: int) -> list[str]:
    """Writes DIR/<i>_<image id>/attention.npz and one PNG per layer and head for each sample; a line per sample."""
    lines = []
    for index, (image_id, caption, example) in enumerate(samples):
        batch = collate([example])
        probs = np.stack([p[0] for p in attention_probs(model, batch)])  # [layers, heads, L, L]
        labels = token_labels(tokenizer, example)
        n = len(labels)
        probs = probs[:, :, :n, :n]
        bounds = [example.num_text, example.num_text + example.num_regions]
        folder = out / f"{index}_{image_id}"
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            folder / "attention.npz", probs=probs.astype(np.float32), tokens=np.array(labels),
            token_kind=batch.token_kind[0, :n].numpy(), boxes=example.boxes.numpy(), caption=" ".join(caption),
            image_id=image_id,
        )  # fmt: skip
        for layer in range(probs.shape[0]):
            for head in range(probs.shape[1]):
                title = f"layer {layer} head {head}"
                heatmap(probs[layer, head], labels, bounds, cell, title).save(
                    folder / f"layer{layer:02d}_head{head:02d}.png"
                )
        lines.append(
            f"{folder}: {probs.shape[0]} layers x {probs.shape[1]} heads over {n} tokens ({' '.join(caption)})"
        )
    return lines
