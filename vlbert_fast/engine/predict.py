"""Predictions of a task over a dataset, on one rank or many: the fine-tuning loop's evaluation and the offline
`vlbert-fast evaluate` (on a model from tasks/finetuned.py `load_finetuned`) share it."""

from __future__ import annotations

import math
from functools import partial

import torch
from torch.utils.data import DataLoader

from ..tasks import collate_task
from .distributed import DistInfo, all_gather_objects


def predict_split(call, task, dataset, info: DistInfo, batch_size: int, dtype: torch.dtype, num_workers: int = 0):
    """The task's prediction records for every sample of `dataset`, in dataset order, on every rank. Each rank
    predicts an equal share (the last ranks repeat samples to fill it, then drop them), so all ranks run the same
    number of forwards, which ZeRO-3's parameter gathering needs."""
    n = len(dataset)
    per_rank = math.ceil(n / info.world_size)
    mine = [info.rank + info.world_size * i for i in range(per_rank)]
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
            task_batch = task_batch.to(info.device, dtype)
            predictions = task.predict(call(task_batch), task_batch)
            records += [(j, p) for j, p in zip(indices, predictions, strict=True) if j < n]
    records = [r for part in all_gather_objects(records, info) for r in part]
    return [p for _, p in sorted(records, key=lambda r: r[0])]
