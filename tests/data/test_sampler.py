"""The mixed batch sampler: 1:1 rows, every caption once per epoch, ranks disjoint and equal, grouping, resume."""

import numpy as np
import pytest

from vlbert_fast.data.sampler import MixedBatchSampler


def make(world=1, rank=0, group=True, n=103, texts=17, seed=0):
    lengths = np.random.default_rng(1).integers(5, 60, size=n)
    return MixedBatchSampler(
        lengths,
        texts,
        caption_rows=4,
        text_rows=4,
        seed=seed,
        rank=rank,
        world_size=world,
        group_by_length=group,
        group_factor=5,
    )


def test_each_batch_is_half_captions_half_text():
    s = make()
    for batch in s:
        caps = [i for i in batch if i < 103]
        texts = [i for i in batch if i >= 103]
        assert len(caps) == 4 and len(texts) == 4
        assert all(103 <= i < 120 for i in texts)


def test_every_caption_at_most_once_per_epoch_and_epochs_differ():
    s = make()
    seen = [i for b in s for i in b if i < 103]
    assert len(seen) == len(set(seen)) == (103 // 4) * 4
    s.set_epoch(1)
    assert [b for b in s] != [b for b in make()]


def test_ranks_are_disjoint_and_equal():
    parts = [list(make(world=3, rank=r)) for r in range(3)]
    assert len({len(p) for p in parts}) == 1 and len(parts[0]) == (103 // 4) // 3
    flat = [i for p in parts for b in p for i in b if i < 103]
    assert len(flat) == len(set(flat))


def test_text_stream_cycles_the_corpus_evenly():
    s = make(n=400, texts=17)
    texts = [i - 400 for b in s for i in b if i >= 400]
    counts = np.bincount(texts, minlength=17)
    assert counts.max() - counts.min() <= 1  # whole permutations, one after another


def test_length_grouping_reduces_spread():
    def spread(sampler):
        return np.mean([np.ptp(sampler.lengths[[i for i in b if i < 103]]) for b in sampler])

    assert spread(make(group=True)) < 0.5 * spread(make(group=False))


def test_resume_skips_exactly_the_consumed_batches():
    full = list(make())
    s = make()
    s.set_epoch(0, start_batch=7)
    assert list(s) == full[7:] and len(s) == len(full) - 7


def test_too_few_captions_is_an_error():
    with pytest.raises(ValueError, match="make no full batch"):
        make(n=3)
