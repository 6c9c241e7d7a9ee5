"""A fine-tuned model loaded for use (`load_finetuned`): the model with its task's head, and the task that reads its
inputs and turns its logits into answers. `vlbert-fast evaluate` and the README's Python example use it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import load_config
from ..config.finetune_run import FinetuneConfig
from ..model.checkpoint_dir import CheckpointError
from ..model.consolidate import checkpoint_info, consolidated_state_dict, resolve_checkpoint
from ..model.pretrained import check_state_dict
from ..model.vlbert_finetuning import VLBertForFinetuning
from . import Task, build_task


@dataclass
class Finetuned:
    model: torch.nn.Module
    """VLBertForFinetuning with the checkpoint's weights, on the CPU in eval mode: `model(task_batch)` -> logits."""
    task: Task
    """The task as the run configured it: `datasets(split)`, `predict(logits, task_batch)`, `metrics`, writers."""
    cfg: FinetuneConfig
    checkpoint: Path
    """The tag directory the weights came from."""
    notes: list[str] = field(default_factory=list)
    """What resolving the checkpoint had to say (a damaged newest checkpoint passed over)."""


def load_finetuned(
    source: str | Path, trust_foreign: bool = False, task: str | None = None, notes: list[str] | None = None
) -> Finetuned:
    """A fine-tuned model ready to use, from a fine-tuning run directory, its checkpoints/ directory or one tag
    directory (any ZeRO stage and world size: the weights are consolidated, verified against the manifest and loaded
    weights-only). `task`: refuse a run that fine-tuned another task. `notes` receives what resolving the checkpoint
    had to say, also when loading then fails. Errors: CheckpointError, WeightsFileError, ConfigError, FormatError (the
    task's data), each naming the file."""
    notes = [] if notes is None else notes
    tag_dir = resolve_checkpoint(source, notes)
    # the weights first: a checkpoint that fails its manifest stops here, before the task's data is built
    state = consolidated_state_dict(tag_dir, trust_foreign)
    saved = checkpoint_info(tag_dir, trust_foreign)["config"]
    if "task" not in saved:
        raise CheckpointError(f"{tag_dir} is not a fine-tuning checkpoint (its config names no task)")
    cfg = load_config(FinetuneConfig, extra=[saved])
    if task and task != cfg.task:
        raise CheckpointError(f"{tag_dir} fine-tuned {cfg.task!r}, not {task!r}")
    built = build_task(cfg, tag_dir.parent.parent)
    model = VLBertForFinetuning(cfg.model, built.build_head())
    check_state_dict(state, model.state_dict(), f"weights in {tag_dir}")
    model.load_state_dict(state)
    return Finetuned(model.eval(), built, cfg, tag_dir, notes)
