"""A fine-tuned model loaded for use (`load_finetuned`: the model with its task's head, and the task that reads its
inputs and turns its logits into answers), and a task's predictions over a dataset (`predict_share`: one rank's
share, for the fine-tuning loop's evaluation, which gathers the shares, and for `vlbert-fast evaluate`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..config import load_config
from ..config.finetune_run import FinetuneConfig
from ..model.checkpoint_dir import CheckpointError
from ..model.consolidate import checkpoint_info, consolidated_state_dict, resolve_checkpoint
from ..model.pretrained import check_state_dict
from ..model.vlbert_finetuning import VLBertForFinetuning
from . import Task, build_task, collate_task


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


def predict_share(
    call, task: Task, dataset, rank: int, world_size: int, batch_size: int, device, dtype, num_workers: int = 0
) -> list[tuple[int, dict]]:
    """(sample index, the task's prediction record) for rank `rank`'s share of `dataset` (on one rank: every sample,
    in order). Each rank predicts an equal share (the last ranks repeat samples to fill it, then drop them), so all
    ranks run the same number of forwards, which ZeRO-3's parameter gathering needs."""
    n = len(dataset)
    mine = [rank + world_size * i for i in range(math.ceil(n / world_size))]
    batches = [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
    loader = DataLoader(
        dataset,
        batch_sampler=[[j % n for j in b] for b in batches],
        collate_fn=partial(collate_task, task),
        num_workers=num_workers,
    )
    records: list[tuple[int, dict]] = []
    with torch.no_grad():
        for indices, task_batch in zip(batches, loader, strict=True):
            task_batch = task_batch.to(device, dtype)
            predictions = task.predict(call(task_batch), task_batch)
            records += [(j, p) for j, p in zip(indices, predictions, strict=True) if j < n]
    return records
