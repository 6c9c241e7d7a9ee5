"""Initialise VL-BERT from Hugging Face BERT weights (`BertForPreTraining` or `BertModel` names).

Source: a directory with `model.safetensors` (or a sharded `model.safetensors.index.json`, or `pytorch_model.bin`)
and optionally `config.json`, or a state dict. The mapping is explicit (`bert_name_map`): HF's separate query, key
and value weights are concatenated into our fused QKV; BERT's two token-type rows fill rows 0-1 (row 2, the
visual type, keeps its initialisation); the MLM head loads from `cls.predictions`. Old TF-converted checkpoints
that name LayerNorm parameters gamma/beta are accepted.

BERT's pooler loads into ours (`pooler.dense`) and its next-sentence head (`cls.seq_relationship`) into the
relationship head, as the original's loader does, when the model has them (`model.with_pooler`,
`model.relationship_head`); a source without them (e.g. a BertForMaskedLM) leaves them new.

The report says what was loaded, which of our parameters are new VL parts (expected to be missing), and which
source weights were not used (BERT's NSP head and pooler, when our model has no place for them). A BERT weight our
model should take that is missing from the source, or has the wrong shape, is an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..config import ModelConfig

# Parameters of ours that BERT does not have: the VL parts and the masked-RoI head.
NEW_VL_PARTS = (
    "region_encoder.",
    "embeddings.visual_ln_text.",
    "embeddings.visual_ln_object.",
    "embeddings.object_word_embedding",
    "embeddings.object_mask_word_embedding",
    "embeddings.end_embedding",
    "embeddings.text_visual_embedding",
    "roi_head.",
)

# Source weights we know and do not use in pretraining.
KNOWN_UNUSED = (
    re.compile(r"^cls\.seq_relationship\."),  # next-sentence prediction: used only by model.relationship_head
    re.compile(r"^pooler\."),  # the pooler: used only by a model with one (model.with_pooler)
    re.compile(r"^embeddings\.position_ids$"),  # a buffer in older checkpoints
    re.compile(r"^cls\.predictions\.decoder\.weight$"),  # tied to the word embeddings
    re.compile(r"^cls\.predictions\.decoder\.bias$"),  # the same tensor as cls.predictions.bias
)


class BertLoadError(RuntimeError):
    """A BERT weight that should load did not (missing, wrong shape, or an incompatible config)."""


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    """Our parameters that received BERT weights (a row range for token_type_embeddings)."""
    missing_expected: list[str] = field(default_factory=list)
    """Our parameters BERT does not have (the new VL parts): they keep their initialisation."""
    unused_known: list[str] = field(default_factory=list)
    """Source weights deliberately not used (NSP head, pooler, tied decoder, buffers)."""
    unexpected: list[str] = field(default_factory=list)
    """Source weights we did not recognise."""

    def __str__(self) -> str:
        lines = [
            f"BERT weights: loaded {len(self.loaded)} tensors",
            f"  new VL parts (not in BERT, initialised): {len(self.missing_expected)}",
            *(f"    {name}" for name in self.missing_expected),
            f"  source weights not used (known): {len(self.unused_known)}",
            *(f"    {name}" for name in self.unused_known),
            f"  source weights not recognised: {len(self.unexpected)}",
            *(f"    {name}" for name in self.unexpected),
        ]
        return "\n".join(lines)


def read_state_dict(source: str | Path) -> dict[str, torch.Tensor]:
    """Reads a HF checkpoint directory or a single weights file."""
    path = Path(source)
    if path.is_dir():
        candidates = ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"]
        found = [path / c for c in candidates if (path / c).is_file()]
        if not found:
            raise BertLoadError(f"{path}: no BERT weights found (looked for {', '.join(candidates)})")
        path = found[0]
    if not path.is_file():
        raise BertLoadError(f"{path}: no such file or directory")
    if path.name.endswith(".index.json"):
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        out: dict[str, torch.Tensor] = {}
        for shard in shards:
            out.update(read_state_dict(path.parent / shard))
        return out
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(str(path), map_location="cpu", weights_only=True)


def missing_bert_message(path: str | Path, field: str = "engine.init_from") -> str:
    """What to do when the BERT directory a config names is not there: how to make one anywhere the weights are."""
    name = Path(path).name or "bert-base-uncased"
    hub = name if name.startswith("bert-") else "bert-base-uncased"
    return (
        f"{field}={path}: no such directory. This config starts from BERT, as the original VL-BERT does: put a "
        f"Hugging Face BERT directory there (config.json, model.safetensors or pytorch_model.bin, and vocab.txt). "
        f"Write one on any machine that has the weights (the Hugging Face hub name is {hub}):\n"
        f'    python -c "from transformers import BertForPreTraining, BertTokenizerFast; '
        f"BertForPreTraining.from_pretrained('{hub}').save_pretrained('{name}'); "
        f"BertTokenizerFast.from_pretrained('{hub}').save_pretrained('{name}')\"\n"
        f"then copy the directory {name}/ to {path}. To start from random weights on purpose, set "
        f"train.from_scratch=true."
    )


def check_hf_config(directory: str | Path, cfg: ModelConfig) -> None:
    """Compares the sizes in a HF `config.json` with ours; raises BertLoadError naming every difference."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        return
    hf = json.loads(path.read_text())
    keys = (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "max_position_embeddings",
    )
    diffs = [f"{k}: BERT {hf[k]} vs ours {getattr(cfg, k)}" for k in keys if k in hf and hf[k] != getattr(cfg, k)]
    if diffs:
        raise BertLoadError(f"{path} does not match model config: " + "; ".join(diffs))


def _normalise(name: str) -> str:
    name = re.sub(r"^bert\.", "", name)
    name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
    return re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name)


def bert_name_map(num_layers: int, with_heads: bool) -> dict[str, list[str]]:
    """Our parameter name -> the BERT names (after dropping `bert.`) that make it, in concatenation order."""
    m = {
        "vlbert.embeddings.word_embeddings.weight": ["embeddings.word_embeddings.weight"],
        "vlbert.embeddings.position_embeddings.weight": ["embeddings.position_embeddings.weight"],
        "vlbert.embeddings.token_type_embeddings.weight": ["embeddings.token_type_embeddings.weight"],
        "vlbert.embeddings.layer_norm.weight": ["embeddings.LayerNorm.weight"],
        "vlbert.embeddings.layer_norm.bias": ["embeddings.LayerNorm.bias"],
    }
    for i in range(num_layers):
        ours, hf = f"vlbert.encoder.layers.{i}.", f"encoder.layer.{i}."
        for p in ("weight", "bias"):
            m[f"{ours}attention.qkv.{p}"] = [f"{hf}attention.self.{n}.{p}" for n in ("query", "key", "value")]
            m[f"{ours}attention.out.{p}"] = [f"{hf}attention.output.dense.{p}"]
            m[f"{ours}attention_norm.{p}"] = [f"{hf}attention.output.LayerNorm.{p}"]
            m[f"{ours}ffn.up.{p}"] = [f"{hf}intermediate.dense.{p}"]
            m[f"{ours}ffn.down.{p}"] = [f"{hf}output.dense.{p}"]
            m[f"{ours}ffn_norm.{p}"] = [f"{hf}output.LayerNorm.{p}"]
    if with_heads:
        for p in ("weight", "bias"):
            m[f"mlm_head.dense.{p}"] = [f"cls.predictions.transform.dense.{p}"]
            m[f"mlm_head.layer_norm.{p}"] = [f"cls.predictions.transform.LayerNorm.{p}"]
        m["mlm_head.bias"] = ["cls.predictions.bias"]
    return m


def optional_bert_parts(ours: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
    """Our parameters that take BERT weights when the source has them and stay new otherwise: the pooler and the
    relationship head (from the next-sentence head), as the original's loader maps them."""
    m = {}
    for p in ("weight", "bias"):
        if f"pooler.dense.{p}" in ours:
            m[f"pooler.dense.{p}"] = [f"pooler.dense.{p}"]
        if f"relationship_head.{p}" in ours:
            m[f"relationship_head.{p}"] = [f"cls.seq_relationship.{p}"]
    return m


def load_hf_bert(model: nn.Module, source: str | Path | Mapping[str, torch.Tensor]) -> LoadReport:
    """Copies BERT weights into `model` (a VLBertForPretraining, or a VLBertModel) and returns the report."""
    from .vlbert import VLBertModel

    wrapped = isinstance(model, VLBertModel)
    cfg: ModelConfig = model.cfg
    if isinstance(source, (str, Path)):
        if Path(source).is_dir():
            check_hf_config(source, cfg)
        state = read_state_dict(source)
    else:
        state = dict(source)
    state = {_normalise(k): v for k, v in state.items()}
    decoder, words = state.get("cls.predictions.decoder.weight"), state.get("embeddings.word_embeddings.weight")
    if decoder is not None and words is not None and not torch.equal(decoder, words):
        raise BertLoadError(
            "cls.predictions.decoder.weight differs from embeddings.word_embeddings.weight: our MLM decoder is tied "
            "to the word embeddings and cannot hold an untied decoder"
        )

    ours = {("vlbert." + k if wrapped else k): p for k, p in model.named_parameters()}
    optional = optional_bert_parts(ours)
    name_map = bert_name_map(cfg.num_hidden_layers, with_heads="mlm_head.bias" in ours) | optional
    report = LoadReport()
    used: set[str] = set()
    missing = []
    for target, sources in name_map.items():
        if not all(s in state for s in sources):
            if target in optional:
                report.missing_expected.append(target)
            else:
                missing.extend(s for s in sources if s not in state)
            continue
        tensor = torch.cat([state[s] for s in sources], dim=0) if len(sources) > 1 else state[sources[0]]
        param = ours[target]
        if target.endswith("token_type_embeddings.weight"):
            rows = tensor.shape[0]
            if rows > param.shape[0] or tensor.shape[1:] != param.shape[1:]:
                raise BertLoadError(
                    f"{sources[0]}: shape {tuple(tensor.shape)} does not fit {target} {tuple(param.shape)}"
                )
            with torch.no_grad():
                param[:rows].copy_(tensor)
            report.loaded.append(f"{target}[:{rows}]")
        else:
            if tensor.shape != param.shape:
                raise BertLoadError(
                    f"{' + '.join(sources)}: shape {tuple(tensor.shape)} does not match {target} {tuple(param.shape)}"
                )
            with torch.no_grad():
                param.copy_(tensor)
            report.loaded.append(target)
        used.update(sources)
    if missing:
        raise BertLoadError(
            f"{len(missing)} BERT weights our model needs are missing from the source: "
            + ", ".join(missing[:8])
            + (" ..." if len(missing) > 8 else "")
        )
    report.missing_expected = sorted(
        report.missing_expected + [k for k in ours if k not in name_map and _is_new_part(k)]
    )
    unexplained = sorted(k for k in ours if k not in name_map and not _is_new_part(k))
    if unexplained:
        raise BertLoadError(f"parameters with no BERT source and not a known VL part: {', '.join(unexplained)}")
    for name in sorted(state):
        if name in used:
            continue
        if any(p.search(name) for p in KNOWN_UNUSED):
            report.unused_known.append(name)
        else:
            report.unexpected.append(name)
    return report


def _is_new_part(name: str) -> bool:
    name = name.removeprefix("vlbert.")
    return name.startswith(NEW_VL_PARTS)
