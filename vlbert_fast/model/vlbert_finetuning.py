"""VL-BERT with a task's head, initialised from pretraining with a key-mapping report.

`VLBertForFinetuning(cfg, head)`: the bare `VLBertModel` (parameter names `vlbert.*`, as in VLBertForPretraining, so
checkpoints line up) and the task's head (`head.*`). Its forward runs the encoder, then calls `head(hidden, batch)`
exactly once: DeepSpeed ZeRO-3 gathers a module's parameters in its forward hooks, so every rank must call the same
modules in the same order every step, and the head runs through `nn.Module.__call__` even when a batch would give it
nothing to do.

`build_finetune_model` loads `vlbert.*` from a pretraining run, checkpoint or export of ours (or a Hugging Face BERT
directory, through the BERT loader), lets the task initialise its head from the pretraining state (VQA: the MLM
transform), and reports what was loaded, what is new, and what was dropped (the pretraining heads).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..config import ModelConfig
from .pretrained import PretrainedError, check_state_dict, load_pretrained_state, looks_like_hf_bert
from .vlbert import VLBertForPretraining, VLBertModel

# Fields that decide the shapes of VLBertModel's parameters: they must match between pretraining and fine-tuning.
ARCHITECTURE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
    "visual_feature_dim",
    "geometry_dim",
)


class VLBertForFinetuning(nn.Module):
    def __init__(self, cfg: ModelConfig, head: nn.Module):
        super().__init__()
        self.cfg = cfg
        self.vlbert = VLBertModel(cfg)
        self.head = head

    def forward(self, task_batch) -> torch.Tensor:
        """The head's logits for a TaskBatch (tasks/base.py)."""
        hidden_BLH = self.vlbert(task_batch.batch)
        return self.head(hidden_BLH, task_batch)


@dataclass
class FinetuneLoadReport:
    source: str
    loaded: list[str] = field(default_factory=list)
    """Parameters of the fine-tuning model that received pretrained weights under the same name (vlbert.*)."""
    head_initialised: list[str] = field(default_factory=list)
    """Head parameters the task initialised from the pretraining state (changed by `init_head`)."""
    new: list[str] = field(default_factory=list)
    """Head parameters that keep their fresh initialisation."""
    dropped: list[str] = field(default_factory=list)
    """Pretraining tensors not loaded as such (the pretraining heads: MLM, masked-RoI classification)."""
    head_lines: list[str] = field(default_factory=list)
    """The task's own account of its head's initialisation."""

    def __str__(self) -> str:
        lines = [
            f"initialised from {self.source}:",
            f"  loaded {len(self.loaded)} tensors ({_groups(self.loaded)})",
            f"  head: {len(self.head_initialised)} tensors from the pretraining state, {len(self.new)} new "
            f"({', '.join(self.new) or 'none'})",
        ]
        lines += [f"    {line}" for line in self.head_lines]
        lines.append(
            f"  dropped {len(self.dropped)} tensors of the pretraining heads, not loaded under their names (the head "
            f"lines above say which of them it copied): {_groups(self.dropped)}"
        )
        return "\n".join(lines)


def _groups(names: list[str]) -> str:
    """'vlbert.encoder x120, vlbert.embeddings x12': counts by the first two name components."""
    counts: dict[str, int] = {}
    for name in names:
        key = ".".join(name.split(".")[:2])
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} x{n}" for k, n in counts.items()) or "none"


def check_architecture(cfg: ModelConfig, saved: ModelConfig, source: str) -> None:
    diffs = [
        f"model.{f}: {getattr(saved, f)!r} there, {getattr(cfg, f)!r} here"
        for f in ARCHITECTURE_FIELDS
        if getattr(saved, f) != getattr(cfg, f)
    ]
    if saved.visual.end_to_end != cfg.visual.end_to_end:
        diffs.append(f"model.visual.mode: {saved.visual.mode!r} there, {cfg.visual.mode!r} here")
    if diffs:
        raise PretrainedError(
            f"{source} was trained with another architecture; set these model fields as it has them:\n  "
            + "\n  ".join(diffs)
        )


def pretraining_state(path: str | Path, cfg: ModelConfig, trust_foreign: bool = False) -> dict[str, torch.Tensor]:
    """VLBertForPretraining's state dict from an export, run or checkpoint of ours, or from a BERT directory
    (`trust_foreign`: also a checkpoint without a manifest of ours, weights-only)."""
    path = Path(path)
    if not path.exists():
        raise PretrainedError(f"init_from={path}: no such file or directory")
    if looks_like_hf_bert(path):
        from .hf_bert import load_hf_bert

        # With the pooler, so BERT's reaches a head that starts from it (VCR's, as the original's).
        model = VLBertForPretraining(dataclasses.replace(cfg, with_pooler=True))
        report = load_hf_bert(model, path)
        # a source without a pooler leaves none (not a fresh one that a head would take for BERT's)
        return {k: v for k, v in model.state_dict().items() if k not in report.missing_expected}
    state, saved_cfg = load_pretrained_state(path, trust_foreign)
    check_architecture(cfg, saved_cfg, str(path))
    return state


def init_finetune_model(
    model: VLBertForFinetuning, task, path: str | Path, trust_foreign: bool = False
) -> FinetuneLoadReport:
    """Loads `vlbert.*` from `path` and lets `task` initialise the head (module docstring)."""
    state = pretraining_state(path, model.cfg, trust_foreign)
    prefix = "vlbert."
    encoder_state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    check_state_dict(encoder_state, model.vlbert.state_dict(), f"weights in {path}")
    model.vlbert.load_state_dict(encoder_state)
    # Which head parameters init_head set: fill them with NaN first, see which it overwrote, restore the others
    # (comparing values would miss a pretrained tensor that equals the fresh initialisation, e.g. an untrained bias).
    params = dict(model.head.named_parameters())
    fresh = {k: p.detach().clone() for k, p in params.items()}
    with torch.no_grad():
        for p in params.values():
            p.fill_(float("nan"))
    head_lines = task.init_head(model.head, state)
    changed = [k for k, p in params.items() if not bool(torch.isnan(p).all())]
    with torch.no_grad():
        for k, p in params.items():
            if k not in changed:
                p.copy_(fresh[k])
    return FinetuneLoadReport(
        source=str(path),
        loaded=[prefix + k for k in encoder_state],
        head_initialised=["head." + k for k in changed],
        new=["head." + k for k in params if k not in changed],
        dropped=[k for k in state if not k.startswith(prefix)],
        head_lines=list(head_lines),
    )


def build_finetune_model(
    cfg: ModelConfig, task, init_from: str | Path = "", trust_foreign: bool = False
) -> tuple[VLBertForFinetuning, FinetuneLoadReport | None]:
    """The model with the task's fresh head; initialised from `init_from` when given (None report otherwise)."""
    model = VLBertForFinetuning(cfg, task.build_head())
    report = init_finetune_model(model, task, init_from, trust_foreign) if init_from else None
    return model, report
