"""A task's training data on one rank: its train and val datasets, the sampler that gives each rank its own micro
batches of each global batch (data/sampler.py `ShuffledBatchSampler`), and the loader that collates them into
TaskBatches. Fine-tuning's counterpart of pretraining's data/pretrain_loader.py."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from torch.utils.data import DataLoader, Dataset

from ..config.finetune_run import FinetuneConfig
from ..data.sampler import ShuffledBatchSampler
from .base import Task, collate_task


@dataclass
class TaskData:
    train_set: Dataset
    val_set: Dataset
    sampler: ShuffledBatchSampler
    loader: DataLoader

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.sampler.set_epoch(epoch, start_batch)


def build_task_data(task: Task, cfg: FinetuneConfig, rank: int, world_size: int) -> TaskData:
    train_set, val_set, train = task.datasets("train"), task.datasets("val"), cfg.train
    sampler = ShuffledBatchSampler(
        len(train_set), train.micro_batch_size, train.global_batch_size, rank, world_size, cfg.seed
    )
    if sampler.steps_per_epoch < 1:
        raise ValueError(
            f"the training split has {len(train_set)} samples, fewer than one global batch "
            f"(train.global_batch_size={train.global_batch_size})"
        )
    loader = DataLoader(
        train_set, batch_sampler=sampler, collate_fn=partial(collate_task, task), num_workers=train.num_workers
    )
    return TaskData(train_set, val_set, sampler, loader)
