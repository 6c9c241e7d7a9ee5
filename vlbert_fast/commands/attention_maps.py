"""`vlbert-fast attention-maps --out DIR [--checkpoint PATH] [--image-id ID --caption TEXT ...]`: per-layer,
per-head attention over the text and the RoIs of given inputs, as PNG heatmaps and raw arrays.

The model: `--checkpoint` names a run directory (its config.yaml sets the model, its checkpoints/latest the weights),
a DeepSpeed checkpoint folder (with `latest`, or one tag's folder), or a state-dict file (.safetensors, .pt); without
it the model is randomly initialised from the config (`--config`, overrides; seed `seed`). A checkpoint of ours is
verified against its manifest and consolidated (any ZeRO stage); anything else that is pickled (a .pt file, a
DeepSpeed folder without our manifest) loads only with `--trust-foreign`, and always weights-only. The inputs: each
`--image-id` names an image whose regions are in the data root's feature shards (`data.root`, default the synthetic
world) with its `--caption` (the i-th caption goes with the i-th image; without captions each image's own caption from
the captions files is used); without either, the first held-out caption. Samples are built as training builds them,
without masking.

The maps come from the padded reference path (plain PyTorch attention, which returns its probabilities), in eval
mode. Written per sample under DIR/<i>_<image id>/:
- attention.npz: `probs` [layers, heads, n, n] float32 (row i: how query token i spreads over the n keys),
  `tokens` (labels), `token_kind` (TokenKind values), `boxes` [R, 4], `caption`, `image_id`;
- layerLL_headHH.png: one heatmap per layer and head, queries down, keys across, tokens labelled, thin lines between
  the text, the RoIs and [END]; each map's colours span 0 to its own maximum (printed in its corner).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig, load_config
from .trust import TRUST_FOREIGN_HELP

HELP = "draw per-layer, per-head attention over text and RoIs as PNG heatmaps (and raw arrays)"
CONFIG = RunConfig

# viridis-like ramp (dark blue -> teal -> yellow), linearly interpolated: readable in print and for most colour vision
RAMP = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="directory to write the maps into (created if missing)")
    parser.add_argument("--checkpoint", default=None, help="run directory, DeepSpeed checkpoint or state-dict file")
    parser.add_argument("--image-id", action="append", default=[], help="image whose regions to use (repeatable)")
    parser.add_argument("--caption", action="append", default=[], help="caption of the i-th image (repeatable)")
    parser.add_argument("--cell", type=int, default=12, help="pixels per attention cell (default 12)")
    parser.add_argument("--trust-foreign", action="store_true", help=TRUST_FOREIGN_HELP)


# ---------------------------------------------------------------------------------------------------------------------
# the model


def _state_file(path: Path) -> Path:
    """The weights file of a run directory, a DeepSpeed checkpoint folder, a tag folder, or a file."""
    if path.is_file():
        return path
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    if (path / "latest").is_file():
        path = path / (path / "latest").read_text().strip()
    found = sorted(path.glob("mp_rank_*_model_states.pt")) if path.is_dir() else []
    if not found:
        raise FileNotFoundError(
            f"--checkpoint {path}: no weights found (expected a run directory, a DeepSpeed checkpoint with 'latest', "
            "a folder with mp_rank_00_model_states.pt, or a .safetensors/.pt file)"
        )
    return found[0]


def load_weights(model: torch.nn.Module, path: Path, trust_foreign: bool = False) -> Path:
    """Loads the model's weights from `path` (strict: every parameter must be there with its shape; module
    docstring for what is verified and what needs `trust_foreign`)."""
    from ..model.checkpoint_dir import is_complete
    from ..model.consolidate import consolidated_state_dict
    from ..model.safe_load import WeightsFileError, load_safetensors_file, load_torch_file

    source = _state_file(path)
    if source.suffix == ".safetensors":
        state = load_safetensors_file(source)
    elif is_complete(source.parent):
        state = consolidated_state_dict(source.parent, trust_foreign)
    elif not trust_foreign:
        raise WeightsFileError(
            f"--checkpoint {source}: a pickled file without a manifest of ours; refused (not a byte of it was "
            f"unpickled). Pass --trust-foreign if you trust where it comes from: it then loads weights-only"
        )
    else:
        state = load_torch_file(source, legacy=True)  # trusted: an older version's files may hold numpy RNG states
        for key in ("module", "state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
                break
    state = {k.removeprefix("module."): v for k, v in state.items()}
    ours = model.state_dict()
    problems = [
        f"{k}: shape {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
        for k, v in ours.items()
        if k in state and state[k].shape != v.shape
    ]
    problems += [f"missing {k}" for k in ours if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in ours]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValueError(
            f"--checkpoint {source}: the weights do not fit the model config: {'; '.join(problems[:5])}{more}"
        )
    model.load_state_dict(state, strict=True)
    return source


def resolve_config(args, cfg: RunConfig) -> RunConfig:
    """A run directory's own config.yaml replaces the defaults; --config files and overrides still apply on top."""
    if args.checkpoint and (Path(args.checkpoint) / "config.yaml").is_file():
        return load_config(RunConfig, [Path(args.checkpoint) / "config.yaml", *args.config], args.overrides)
    return cfg


# ---------------------------------------------------------------------------------------------------------------------
# the inputs


def build_samples(cfg: RunConfig, image_ids: list[str], captions: list[str]):
    """(root, tokenizer, [(image id, caption words, Example)]) for the requested inputs (module docstring)."""
    from ..data.formats import CaptionRecord, read_cc_jsonl
    from ..data.loader import resolve_root
    from ..data.paths import under
    from ..data.pretrain import CaptionDataset, RegionSource, image_id_of
    from ..tokenization import Tokenizer

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


# ---------------------------------------------------------------------------------------------------------------------
# drawing


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


# ---------------------------------------------------------------------------------------------------------------------


def attention_probs(model, batch) -> list[np.ndarray]:
    """Per layer [B, heads, L, L] probabilities of the padded reference path."""
    vlbert = model.vlbert
    vlbert.validate(batch)
    with torch.no_grad():
        embedded = vlbert.embeddings(batch, vlbert.region_features(batch))
        _, probs = vlbert.encoder(embedded, batch.attention_mask, return_probs=True)
    return [p.float().numpy() for p in probs]


def main(args, cfg: RunConfig) -> int:
    from ..data import collate
    from ..model import VLBertForPretraining
    from ..model.safe_load import WeightsFileError

    try:
        cfg = resolve_config(args, cfg)
        torch.manual_seed(cfg.seed)
        model = VLBertForPretraining(cfg.model).eval()
        source = load_weights(model, Path(args.checkpoint), args.trust_foreign) if args.checkpoint else None
        root, tokenizer, samples = build_samples(cfg, args.image_id, args.caption)
    except (ValueError, FileNotFoundError, WeightsFileError) as exc:
        print(f"vlbert-fast attention-maps: {exc}", file=sys.stderr)
        return 2
    print(f"model: {'weights from ' + str(source) if source else 'random initialisation (no --checkpoint)'}")
    out = Path(args.out)
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
                heatmap(probs[layer, head], labels, bounds, args.cell, title).save(
                    folder / f"layer{layer:02d}_head{head:02d}.png"
                )
        print(f"{folder}: {probs.shape[0]} layers x {probs.shape[1]} heads over {n} tokens ({' '.join(caption)})")
    return 0
