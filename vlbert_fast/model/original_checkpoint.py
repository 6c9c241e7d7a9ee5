"""The original VL-BERT's released checkpoints (jackroos/VL-BERT: vl-bert-{base,large}-{prec,e2e}.model) in our
layout, weights only, with a report of what was mapped, what is new and what was not used.

A released file is a torch pickle holding `state_dict` (the DistributedDataParallel module's, keys may start with
`module.`), `optimizer` and `validation_monitor`; only `state_dict` is read, through `torch.load(weights_only=True)`,
which unpickles tensors and plain containers and nothing else. The names and layouts come from the original's module
code (pretrain/modules/resnet_vlbert_for_pretraining_multitask.py, common/visual_linguistic_bert.py,
common/fast_rcnn.py, common/backbone/resnet/resnet.py):

- embeddings: `vlbert.{word,position,token_type}_embeddings.weight`, `vlbert.embedding_LayerNorm.*`,
  `vlbert.visual_ln_{text,object}.*`; the one-row `nn.Embedding`s `vlbert.end_embedding` ([END]),
  `object_linguistic_embeddings` ([IMG]), `object_mask_word_embedding` (a masked RoI's word),
  `aux_text_visual_embedding` (the text-only rows' visual input) and `object_mask_visual_embedding` (a masked RoI's
  appearance) become our [H] (or [Dv]) vectors;
- the region projection `image_feature_extractor.obj_downsample.1` takes concat(geometry, appearance): ours takes
  concat(appearance, geometry), so its weight's two column blocks swap;
- the encoder `vlbert.encoder.layer.{i}.*` has BERT's names with separate query/key/value (concatenated into our
  fused qkv, as the BERT loader does, model/hf_bert.py);
- heads: `vlbert.mlm_head.predictions.*` (decoder tied to the word embeddings), `vlbert.mvrc_head.*` (masked-RoI
  classification), and where present `vlbert.pooler.dense.*` and `vlbert.relationsip_head.caption_image_relationship.*`
  (the original's spelling);
- end to end (e2e) checkpoints: the ResNet `image_feature_extractor.backbone.{conv1,bn1,layer1-3}.*` and its res5
  `image_feature_extractor.roi_head_feature_extractor.*` become our visual branch (`vlbert.visual.*`, layer4 for res5);
  `image_feature_extractor.head.0.*` is the same res5 module again and must hold the same tensors.

Our model config is inferred from the tensors (sizes, layers, detector classes, e2e ResNet depth and width) and the
original's settings (dropout 0.1, heads of 64 dimensions, its e2e ResNet: stride in the 1x1, dilated res5, stem and
res2 frozen, frozen BatchNorm, Caffe normalisation); model fields given as overrides win. Parameters the source lacks
(e.g. the aux vector of a checkpoint pretrained without the text corpus) keep their initialisation and are reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import ConfigError, ModelConfig, load_config
from .backbone import BLOCKS_PER_STAGE
from .hf_bert import bert_name_map

GEOMETRY_DIM = 2048
"""The original's box geometry: 4 coordinates x (sin, cos) x 256 frequencies (common/utils/bbox.py)."""

HEAD_DIM = 64
"""BERT's head width (Base 768 / 12, Large 1024 / 16): the number of heads is not in the tensors."""

_BACKBONE = "image_feature_extractor.backbone."
_RES5 = "image_feature_extractor.roi_head_feature_extractor."
_RES5_AGAIN = "image_feature_extractor.head.0."

# Our name -> the original's, for tensors that map one to one (a one-row embedding becomes a vector).
_VECTORS = {
    "vlbert.embeddings.end_embedding": "vlbert.end_embedding.weight",
    "vlbert.embeddings.object_word_embedding": "object_linguistic_embeddings.weight",
    "vlbert.embeddings.object_mask_word_embedding": "object_mask_word_embedding.weight",
    "vlbert.embeddings.text_visual_embedding": "aux_text_visual_embedding.weight",
    "vlbert.region_encoder.mask_appearance": "object_mask_visual_embedding.weight",
}
_PLAIN = {
    "vlbert.region_encoder.projection.bias": "image_feature_extractor.obj_downsample.1.bias",
    "roi_head.dense.weight": "vlbert.mvrc_head.transform.dense.weight",
    "roi_head.dense.bias": "vlbert.mvrc_head.transform.dense.bias",
    "roi_head.classifier.weight": "vlbert.mvrc_head.region_cls_pred.weight",
    "roi_head.classifier.bias": "vlbert.mvrc_head.region_cls_pred.bias",
    "pooler.dense.weight": "vlbert.pooler.dense.weight",
    "pooler.dense.bias": "vlbert.pooler.dense.bias",
    "relationship_head.weight": "vlbert.relationsip_head.caption_image_relationship.weight",
    "relationship_head.bias": "vlbert.relationsip_head.caption_image_relationship.bias",
}
for _ln in ("visual_ln_text", "visual_ln_object"):
    for _p in ("weight", "bias"):
        _PLAIN[f"vlbert.embeddings.{_ln}.{_p}"] = f"vlbert.{_ln}.{_p}"
_PROJECTION = "vlbert.region_encoder.projection.weight"
_PROJECTION_SOURCE = "image_feature_extractor.obj_downsample.1.weight"
_TIED_DECODER = "vlbert.mlm_head.predictions.decoder.weight"


class OriginalCheckpointError(RuntimeError):
    """A file that is not a readable original checkpoint, or tensors that do not fit together."""


def load_weights_only(path: str | Path) -> object:
    """The torch file at `path`, unpickling tensors and plain containers only (never code). The one place this
    module reads a torch file; the project's shared weights-only loader can take its place."""
    return torch.load(str(path), map_location="cpu", weights_only=True)


def read_original_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The `state_dict` of an original checkpoint file (or a bare state dict), `module.` prefixes removed."""
    path = Path(path)
    if not path.is_file():
        raise OriginalCheckpointError(f"{path}: no such file")
    try:
        obj = load_weights_only(path)
    except Exception as exc:  # unpickling errors come in many types (weights-only refusals, corrupt files)
        raise OriginalCheckpointError(
            f"{path}: cannot be read weights-only ({type(exc).__name__}: {str(exc)[:300]}); expected a torch file "
            f"holding a dict with 'state_dict' (the original's *.model files), of tensors and plain values only"
        ) from exc
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise OriginalCheckpointError(f"{path}: expected a dict with a 'state_dict' of tensors, found {found}")
    out = {}
    for key, value in state.items():
        name = key.removeprefix("module.")
        if name in out:
            raise OriginalCheckpointError(f"{path}: {name} appears with and without the 'module.' prefix")
        out[name] = value
    if "vlbert.word_embeddings.weight" not in out:
        raise OriginalCheckpointError(
            f"{path}: no vlbert.word_embeddings.weight: not a VL-BERT checkpoint of the original (keys start with "
            f"{sorted({k.split('.')[0] for k in out})[:8]})"
        )
    return out


# ---------------------------------------------------------------------------------------------------------------------
# the model config


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def _resnet_config(state: dict[str, torch.Tensor]) -> dict | None:
    """The e2e ResNet's settings: depth and width from the tensors, the rest from the original's e2e configs."""
    if not any(k.startswith(_BACKBONE) for k in state):
        return None
    res5 = _RES5 if any(k.startswith(_RES5) for k in state) else _RES5_AGAIN
    counts = tuple(_count(state, rf"^{re.escape(_BACKBONE)}layer{i}\.(\d+)\.") for i in (1, 2, 3))
    counts += (_count(state, rf"^{re.escape(res5)}(\d+)\."),)
    bottleneck = f"{_BACKBONE}layer1.0.conv3.weight" in state
    depth = next(
        (d for d, (block, c) in BLOCKS_PER_STAGE.items() if c == counts and (block.expansion == 4) == bottleneck),
        None,
    )
    if depth is None:
        raise OriginalCheckpointError(f"the e2e ResNet has {counts} blocks per stage: not a ResNet-18/34/50/101/152")
    return {
        "mode": "e2e",
        "depth": depth,
        "width": int(state[f"{_BACKBONE}conv1.weight"].shape[0]),
        "stride_in_1x1": True,
        "res5_dilated": True,
        "frozen_stages": 2,
        "frozen_bn": True,
        "pooled_size": 14,
        "sampling_ratio": 1,
        "normalization": "caffe",
        "short_side": 600,
        "long_side": 1000,
        "pretrained": "",
    }


def infer_model_config(
    state: dict[str, torch.Tensor], overrides: list[str] = (), with_pooler: bool = False
) -> ModelConfig:
    """Our ModelConfig for an original state dict (module docstring); `overrides` are `field=value` (or
    `model.field=value`) dotlist entries that win."""
    words = state["vlbert.word_embeddings.weight"]
    hidden = int(words.shape[1])
    projection = state.get(_PROJECTION_SOURCE)
    if projection is None:
        raise OriginalCheckpointError(f"{_PROJECTION_SOURCE} is missing: the region projection cannot be converted")
    if "vlbert.visual_1x1_text.weight" in state or "vlbert.visual_scale_text" in state:
        raise OriginalCheckpointError(
            "the checkpoint uses visual_1x1_* or visual_scale_* (visual_size != hidden_size or visual_ln off): only "
            "the released configuration (visual LayerNorms, visual_size = hidden_size) is supported"
        )
    values: dict = {
        "vocab_size": int(words.shape[0]),
        "hidden_size": hidden,
        "num_hidden_layers": _count(state, r"^vlbert\.encoder\.layer\.(\d+)\."),
        "num_attention_heads": max(1, hidden // HEAD_DIM),
        "intermediate_size": int(state["vlbert.encoder.layer.0.intermediate.dense.weight"].shape[0]),
        "max_position_embeddings": int(state["vlbert.position_embeddings.weight"].shape[0]),
        "visual_feature_dim": int(projection.shape[1]) - GEOMETRY_DIM,
        "geometry_dim": GEOMETRY_DIM,
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "visual_scale_text_init": 0.0,
        "visual_scale_object_init": 0.0,
        "with_pooler": with_pooler or "vlbert.pooler.dense.weight" in state,
        "relationship_head": "vlbert.relationsip_head.caption_image_relationship.weight" in state,
    }
    if "vlbert.mvrc_head.region_cls_pred.weight" in state:
        values["num_roi_classes"] = int(state["vlbert.mvrc_head.region_cls_pred.weight"].shape[0])
    else:
        values["num_roi_classes"] = 1601  # the Visual Genome detector's classes
    visual = _resnet_config(state)
    if visual is not None:
        values["visual"] = visual
    try:
        return load_config(ModelConfig, extra=[values], overrides=[o.removeprefix("model.") for o in overrides])
    except ConfigError as exc:
        raise OriginalCheckpointError(f"model config for the converted checkpoint: {exc}") from exc


# ---------------------------------------------------------------------------------------------------------------------
# the mapping


@dataclass
class ConversionReport:
    source: str
    mapped: list[tuple[str, str]] = field(default_factory=list)
    """(our tensor, the original's tensors it came from, joined with ' + ')."""
    new: list[str] = field(default_factory=list)
    """Our tensors the source has nothing for: they keep their initialisation."""
    unused: list[str] = field(default_factory=list)
    """Source tensors not converted (a fine-tuned model's task head, BatchNorm counters of frozen BatchNorms, ...)."""
    checked: list[str] = field(default_factory=list)
    """Source tensors that repeat a converted one (the tied MLM decoder, the res5 head's second name): checked equal."""

    def __str__(self) -> str:
        counters = [k for k in self.unused if k.endswith("num_batches_tracked")]
        others = [k for k in self.unused if k not in counters]
        groups: dict[str, int] = {}
        for ours, _ in self.mapped:
            key = ".".join(ours.split(".")[:2]) if ours.startswith("vlbert.") else ours.split(".")[0]
            groups[key] = groups.get(key, 0) + 1
        lines = [
            f"converted {self.source}: {len(self.mapped)} tensors mapped "
            f"({', '.join(f'{k} x{n}' for k, n in groups.items())})",
            *(
                f"    {ours} <- {theirs}" + (" (column blocks swapped)" if ours == _PROJECTION else "")
                for ours, theirs in self.mapped
                if "obj_downsample" in theirs
            ),
            f"    query + key + value -> qkv in {sum(1 for _, theirs in self.mapped if '.query.weight' in theirs)} "
            f"layers; one-row embeddings -> vectors: {sum(1 for ours, _ in self.mapped if ours in _VECTORS)}",
            f"  new (not in the source, initialised): {len(self.new)}",
            *(f"    {name}" for name in self.new),
            f"  source tensors not used: {len(self.unused)}",
            *(f"    {name}" for name in others),
        ]
        if counters:
            lines.append(
                f"    {len(counters)} BatchNorm num_batches_tracked counters (our frozen BatchNorms keep none)"
            )
        if self.checked:
            lines.append(f"  repeated source tensors checked equal to the converted ones: {len(self.checked)}")
        return "\n".join(lines)


def _original_name(bert_name: str) -> str:
    """A BERT name of model/hf_bert.py's map (without `bert.`) -> the original's name of the same tensor."""
    if bert_name.startswith("embeddings.LayerNorm."):
        return "vlbert.embedding_LayerNorm." + bert_name.removeprefix("embeddings.LayerNorm.")
    if bert_name.startswith("embeddings."):
        return "vlbert." + bert_name.removeprefix("embeddings.")
    if bert_name.startswith("cls.predictions."):
        return "vlbert.mlm_head.predictions." + bert_name.removeprefix("cls.predictions.")
    return "vlbert." + bert_name  # encoder.layer.{i}...


def original_name_map(cfg: ModelConfig, ours: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Our tensor name -> the original's names that make it, in concatenation order (module docstring)."""
    bert = bert_name_map(cfg.num_hidden_layers, with_heads="mlm_head.bias" in ours)
    m = {target: [_original_name(s) for s in sources] for target, sources in bert.items()}
    m.update({k: [v] for k, v in _VECTORS.items()})
    m.update({k: [v] for k, v in _PLAIN.items()})
    m[_PROJECTION] = [_PROJECTION_SOURCE]
    for name in ours:
        if name.startswith("vlbert.visual."):
            rest = name.removeprefix("vlbert.visual.")
            m[name] = [_RES5 + rest.removeprefix("layer4.") if rest.startswith("layer4.") else _BACKBONE + rest]
    return {k: v for k, v in m.items() if k in ours}


def _converted(target: str, tensors: list[torch.Tensor]) -> torch.Tensor:
    if target == _PROJECTION:  # theirs: [geometry | appearance] columns; ours: [appearance | geometry]
        (w,) = tensors
        return torch.cat([w[:, GEOMETRY_DIM:], w[:, :GEOMETRY_DIM]], dim=1)
    if target in _VECTORS:
        (row,) = tensors
        return row.reshape(-1)
    return torch.cat(tensors, dim=0) if len(tensors) > 1 else tensors[0]


def convert_original_state(
    state: dict[str, torch.Tensor], cfg: ModelConfig, source: str, extra: dict[str, torch.Tensor] | None = None
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Our VLBertForPretraining state dict (fp32) from an original state dict, and the report. `extra`: tensors in
    our names that fill what the source lacks (BERT's pooler given with --bert)."""
    from .vlbert import VLBertForPretraining

    torch.manual_seed(0)  # the new parts' initialisation is reproducible
    fresh = VLBertForPretraining(cfg).state_dict()
    name_map = original_name_map(cfg, fresh)
    report = ConversionReport(source)
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    bad = []
    for target, expected in fresh.items():
        sources = name_map.get(target)
        if sources and all(s in state for s in sources):
            tensor = _converted(target, [state[s] for s in sources])
            if tuple(tensor.shape) != tuple(expected.shape):
                bad.append(f"{' + '.join(sources)}: {tuple(tensor.shape)} for {target} {tuple(expected.shape)}")
                continue
            out[target] = tensor.detach().to(torch.float32 if expected.is_floating_point() else expected.dtype)
            report.mapped.append((target, " + ".join(sources)))
            used.update(sources)
        elif sources and any(s in state for s in sources):
            bad.append(f"{target}: the source has only part of {sources}")
        elif extra is not None and target in extra:
            out[target] = extra[target].detach().float()
            report.mapped.append((target, f"{target} (--bert)"))
        else:
            out[target] = expected
            report.new.append(target)
    if bad:
        raise OriginalCheckpointError("tensors that do not fit the inferred model:\n  " + "\n  ".join(bad[:12]))
    _check_repeats(state, out, used, report)
    report.unused = sorted(k for k in state if k not in used and k not in report.checked)
    essential = [n for n in report.new if not n.startswith(_OPTIONAL_NEW)]
    if essential:
        raise OriginalCheckpointError(
            f"the source lacks tensors every VL-BERT checkpoint has: {essential[:8]}"
            + (" ..." if len(essential) > 8 else "")
        )
    return out, report


_OPTIONAL_NEW = (
    "vlbert.embeddings.text_visual_embedding",  # pretrained without the text corpus
    "vlbert.embeddings.object_mask_word_embedding",  # without masked-RoI classification
    "vlbert.region_encoder.mask_appearance",  # e2e pretraining masks pixels instead
    "mlm_head.",  # a fine-tuned model's encoder only
    "roi_head.",
    "pooler.",
    "relationship_head.",
)


def _check_repeats(
    state: dict[str, torch.Tensor], out: dict[str, torch.Tensor], used: set[str], report: ConversionReport
) -> None:
    """The tied MLM decoder must equal the word embeddings, the res5 head's second name the first."""
    decoder = state.get(_TIED_DECODER)
    if decoder is not None:
        if not torch.equal(decoder.float(), out["vlbert.embeddings.word_embeddings.weight"]):
            raise OriginalCheckpointError(
                f"{_TIED_DECODER} differs from vlbert.word_embeddings.weight: our MLM decoder is tied to the word "
                "embeddings, as the original's"
            )
        report.checked.append(_TIED_DECODER)
    for name in state:
        if name.startswith(_RES5_AGAIN):
            twin = _RES5 + name.removeprefix(_RES5_AGAIN)
            if twin in state and twin in used and not torch.equal(state[name], state[twin]):
                raise OriginalCheckpointError(f"{name} differs from {twin}: both name the original's res5 module")
            if twin in state:
                report.checked.append(name)


def bert_pooler(directory: str | Path) -> dict[str, torch.Tensor]:
    """BERT's pooler from a Hugging Face BERT directory, in our names (the original's VCR takes it from BERT)."""
    from .hf_bert import read_state_dict

    state = {k.removeprefix("bert."): v for k, v in read_state_dict(directory).items()}
    found = {f"pooler.dense.{p}": state.get(f"pooler.dense.{p}") for p in ("weight", "bias")}
    if any(v is None for v in found.values()):
        raise OriginalCheckpointError(f"{directory}: no pooler.dense.weight/bias in its BERT weights")
    return found


def convert_original_checkpoint(
    source: str | Path, out: str | Path, overrides: list[str] = (), bert: str | Path | None = None
) -> ConversionReport:
    """Reads an original checkpoint weights-only and writes our export (model.safetensors + config.json) to `out`."""
    from .pretrained import save_pretrained

    state = read_original_checkpoint(source)
    pooler = bert_pooler(bert) if bert else None
    cfg = infer_model_config(state, list(overrides), with_pooler=pooler is not None)
    converted, report = convert_original_state(state, cfg, str(source), extra=pooler)
    if pooler is not None and not cfg.with_pooler:
        raise OriginalCheckpointError("--bert gives a pooler but model.with_pooler=false was set")
    save_pretrained(
        converted, cfg, out, metadata={"source": str(Path(source).resolve()), "converted": "jackroos/VL-BERT"}
    )
    return report
