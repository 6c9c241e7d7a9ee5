"""Micro batches of sample indices for every job, split over ranks by one rule: an epoch is a global sequence of
micro batches that every rank computes alike from (seed, epoch), and rank r takes batches r, r + W, r + 2W, ... of it
(`rank_batches`), so global batch j is micro batches j A W ... (j + 1) A W - 1 (A accumulation steps, W ranks).
`start_batch` skips the first batches of this rank, for an exact resume.

`ShuffledBatchSampler` (fine-tuning): each epoch a permutation of the samples cut into micro batches; the samples
after the last whole global batch are left out that epoch.

`MixedBatchSampler` (pretraining): image-text samples mixed with text-only rows, grouped by length.

Each micro batch holds `caption_rows` image-text indices and `text_rows` text-only indices (the original draws one
batch from each loader per step, 1:1). Indices address a ConcatDataset([captions, texts]): text-only indices are
offset by the number of captions. The captions decide the epoch (each is seen once per epoch; the last partial
batch is dropped); the text corpus cycles through its own permutations.

Length grouping: the shuffled captions are cut into chunks of `group_factor` batches, each chunk is sorted by length
and cut into batches, and the batches are shuffled again, so a batch's rows have similar lengths without the order
being fixed. Ranks take every `world_size`-th batch of the same global sequence (all ranks agree on it from the seed
and epoch) and get equally many.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


def rank_batches(num_batches: int, rank: int, world_size: int, start_batch: int = 0) -> range:
    """Which batches of an epoch's global sequence of `num_batches` rank `rank` takes (module docstring)."""
    return range(rank + start_batch * world_size, num_batches, world_size)


class ShuffledBatchSampler(Sampler[list[int]]):
    """Micro batches of `micro` sample indices for one rank, a fresh permutation of the samples each epoch
    (module docstring); `steps_per_epoch` whole global batches of `global_batch` samples."""

    def __init__(self, num_samples: int, micro: int, global_batch: int, rank: int, world_size: int, seed: int):
        self.num_samples, self.micro, self.global_batch = num_samples, micro, global_batch
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.accumulation = global_batch // (micro * world_size)
        self.steps_per_epoch = num_samples // global_batch
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return self.steps_per_epoch * self.accumulation - self.start_batch

    def __iter__(self) -> Iterator[list[int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        num_batches = self.steps_per_epoch * self.global_batch // self.micro
        for b in rank_batches(num_batches, self.rank, self.world_size, self.start_batch):
            yield order[b * self.micro : (b + 1) * self.micro].tolist()


class MixedBatchSampler(Sampler[list[int]]):
    def __init__(
        self,
        caption_lengths: np.ndarray,
        num_texts: int,
        caption_rows: int,
        text_rows: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        group_by_length: bool = True,
        group_factor: int = 50,
    ):
        if caption_rows < 1:
            raise ValueError(f"caption_rows must be >= 1, found {caption_rows}")
        if text_rows and num_texts < 1:
            raise ValueError("text rows are requested but the text corpus is empty")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.lengths = np.asarray(caption_lengths)
        self.num_captions = len(self.lengths)
        self.num_texts = num_texts
        self.caption_rows = caption_rows
        self.text_rows = text_rows
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.group_by_length = group_by_length
        self.group_factor = group_factor
        self.epoch = 0
        self.start_batch = 0
        if len(self) == 0:
            raise ValueError(
                f"{self.num_captions} image-text samples make no full batch of {caption_rows} rows on each of "
                f"{world_size} ranks"
            )

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def batches_per_epoch(self) -> int:
        """Micro batches each rank gets in one epoch."""
        return (self.num_captions // self.caption_rows) // self.world_size

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.start_batch

    def caption_batches(self) -> list[np.ndarray]:
        """The epoch's global sequence of image-text batches (before the split over ranks)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.num_captions)
        rows = self.caption_rows
        if self.group_by_length:
            chunk = rows * self.group_factor
            parts = [order[i : i + chunk] for i in range(0, len(order), chunk)]
            order = np.concatenate([p[np.argsort(self.lengths[p], kind="stable")] for p in parts])
        batches = [order[i : i + rows] for i in range(0, len(order) - rows + 1, rows)]
        if self.group_by_length:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches[: self.batches_per_epoch() * self.world_size]

    def text_batches(self, count: int) -> list[np.ndarray]:
        """`count` global batches of text-only indices, continuing one cycling stream across epochs."""
        if not self.text_rows:
            return [np.zeros(0, dtype=np.int64)] * count
        first = self.epoch * self.batches_per_epoch() * self.world_size * self.text_rows
        needed = count * self.text_rows
        cycle, offset = divmod(first, self.num_texts)
        stream = []
        while sum(len(s) for s in stream) < offset + needed:
            stream.append(np.random.default_rng([self.seed, cycle, 7]).permutation(self.num_texts))
            cycle += 1
        flat = np.concatenate(stream)[offset : offset + needed]
        return [flat[i * self.text_rows : (i + 1) * self.text_rows] for i in range(count)]

    def __iter__(self) -> Iterator[list[int]]:
        captions = self.caption_batches()
        texts = self.text_batches(len(captions))
        for b in rank_batches(len(captions), self.rank, self.world_size, self.start_batch):
            yield [int(i) for i in captions[b]] + [self.num_captions + int(i) for i in texts[b]]
