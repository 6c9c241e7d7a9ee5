"""The contract between a fine-tuning task (VQA v2, RefCOCO+, VCR) and the one fine-tuning loop.

A task turns the files of its dataset into `TaskSample`s, owns a head over the encoder's hidden states, its loss, its
predictions, its official metric and its official output file. The loop (engine/trainer.py with engine/finetune_job.py)
never looks inside a task: it batches samples with `collate_task`, runs `VLBertModel` and the task's head on the
`Batch`, asks the task for the loss, and at evaluation hands the task's predictions back to it for metrics and writing.

Legend: S samples in a batch, C rows per sample (VCR: the 4 choices; 1 elsewhere), B = S x C rows, L tokens per
row, H hidden.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..data.batch import Batch
from ..data.collate import Example, collate


@dataclass
class TaskSample:
    """One sample of a task: the rows the model reads and what is known about the answer."""

    rows: list[Example]
    """C model rows, each a tokenised `Example` (no MLM labels); VCR gives one per choice, the others one."""
    target: dict[str, torch.Tensor] = field(default_factory=dict)
    """Training targets (VQA: [A] soft scores; RefCOCO+: [R] 0/1 per region; VCR: [] the right choice); empty for a
    test split without labels."""
    meta: dict[str, Any] = field(default_factory=dict)
    """What the metric and the writers need (question_id, ref_id and the boxes, annot_id, ...); never tensors of
    the batch."""


@dataclass
class TaskBatch:
    batch: Batch
    """The B = S x C rows, sample after sample (the C rows of a sample are adjacent)."""
    targets: dict[str, torch.Tensor]
    """Each target field stacked over the S samples, or padded where its length varies (the task's `collate_targets`
    decides)."""
    meta: list[dict[str, Any]]
    """The S samples' meta."""
    rows_per_sample: int

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TaskBatch:
        targets = {k: v.to(device) for k, v in self.targets.items()}
        return TaskBatch(self.batch.to(device, dtype), targets, self.meta, self.rows_per_sample)


class Task(Protocol):
    """What every task module provides (tasks/<name>/task.py), registered in tasks/__init__.py."""

    name: str
    root: Path
    """The directory of the dataset's files (the synthetic version's cache directory when no root is configured)."""
    opts: Any
    """The task's section of the fine-tuning config (`cfg.vqa`, `cfg.refcoco`, `cfg.vcr`); the loop reads only its
    optional `trainval` flag."""

    def datasets(self, split: str) -> Sequence[TaskSample]:
        """The samples of `split` ("train", "val", "test", or the task's own names such as RefCOCO+'s "testA"),
        read from the real files the task config points at. Errors name the file and record."""
        ...

    def build_head(self) -> nn.Module:
        """A fresh head: `head(hidden_BLH, task_batch) -> logits` (VQA [S, answers], RefCOCO+ [S, R] with -inf on
        missing regions, VCR [S, C])."""
        ...

    def init_head(self, head: nn.Module, pretraining_state: dict[str, torch.Tensor]) -> list[str]:
        """Initialise the head from a pretraining state dict where the original does (VQA: the MLM transform);
        returns lines for the key-mapping report."""
        ...

    def collate_targets(self, samples: Sequence[TaskSample]) -> dict[str, torch.Tensor]: ...

    def loss(self, logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def predict(self, logits: torch.Tensor, batch: TaskBatch) -> list[dict[str, Any]]:
        """One prediction record per sample, in the form the official file and the metric use."""
        ...

    def metrics(self, predictions: list[dict[str, Any]], split: str) -> dict[str, float]:
        """The official metric(s) of `split` against its annotations (VQA accuracy, RefCOCO+ accuracy@IoU 0.5,
        VCR Q->A / QA->R / Q->AR)."""
        ...

    def write_predictions(self, predictions: list[dict[str, Any]], split: str, out_dir: Path) -> Path:
        """The official submission file (VQA test-dev JSON, VCR leaderboard CSV, RefCOCO+ JSON)."""
        ...


def collate_task(task: Task, samples: Sequence[TaskSample]) -> TaskBatch:
    rows = [row for sample in samples for row in sample.rows]
    counts = {len(sample.rows) for sample in samples}
    if len(counts) != 1:
        raise ValueError(f"collate_task: every sample of a batch must have the same number of rows, found {counts}")
    return TaskBatch(collate(rows), task.collate_targets(samples), [s.meta for s in samples], counts.pop())
