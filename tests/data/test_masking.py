"""Masking statistics as the original: whole words at 15%, 80/10/10; regions at 15%, 90% hidden; region 0 never."""

import numpy as np
import pytest

from vlbert_fast.data import IGNORE_INDEX
from vlbert_fast.data.masking import (
    RegionMaskConfig,
    WordMaskConfig,
    WordMasker,
    mask_regions,
    with_whole_image,
)

MASK, VOCAB, SPECIAL = 4, 1000, {0, 1, 2, 3, 4}


def sentence(rng, words=12):
    """ids and word_ids of a sentence whose words have 1..3 pieces."""
    ids, word_ids = [], []
    for w in range(words):
        for _ in range(int(rng.integers(1, 4))):
            ids.append(int(rng.integers(5, VOCAB)))
            word_ids.append(w)
    return ids, word_ids


def test_word_masking_statistics_over_many_samples():
    masker = WordMasker(MASK, VOCAB, SPECIAL)
    rng = np.random.default_rng(0)
    words = chosen = masked = randomised = kept = 0
    for _ in range(4000):
        ids, word_ids = sentence(rng)
        out, labels = masker(ids, word_ids, rng)
        ids_a, wid = np.array(ids), np.array(word_ids)
        for w in np.unique(wid):
            pieces = wid == w
            words += 1
            lab = labels[pieces]
            if (lab == IGNORE_INDEX).all():
                assert (out[pieces] == ids_a[pieces]).all()  # an unchosen word is untouched
                continue
            assert (lab == ids_a[pieces]).all()  # all pieces of a chosen word are labelled together
            chosen += 1
            if (out[pieces] == MASK).all():
                masked += 1
            elif (out[pieces] == ids_a[pieces]).all():
                kept += 1
            else:
                randomised += 1
                assert not np.isin(out[pieces], list(SPECIAL)).any()
    # 48k words, ~7.2k chosen: the binomial standard deviations are ~0.16% of words and ~0.5% of choices
    assert chosen / words == pytest.approx(0.15, abs=0.006)
    assert masked / chosen == pytest.approx(0.8, abs=0.02)
    assert randomised / chosen == pytest.approx(0.1, abs=0.015)
    assert kept / chosen == pytest.approx(0.1, abs=0.015)


def test_special_tokens_are_never_chosen():
    masker = WordMasker(MASK, VOCAB, SPECIAL, WordMaskConfig(prob=1.0))
    out, labels = masker([2, 50, 60, 3], [-1, 0, 1, -1], np.random.default_rng(1))
    assert labels[0] == labels[3] == IGNORE_INDEX and out[0] == 2 and out[3] == 3
    assert (labels[1:3] != IGNORE_INDEX).all()


def test_masking_is_reproducible_by_seed():
    masker = WordMasker(MASK, VOCAB, SPECIAL)
    ids, word_ids = sentence(np.random.default_rng(3), words=40)
    a = masker(ids, word_ids, np.random.default_rng([7, 0, 11]))
    b = masker(ids, word_ids, np.random.default_rng([7, 0, 11]))
    c = masker(ids, word_ids, np.random.default_rng([7, 1, 11]))
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert any((x != y).any() for x, y in zip(a, c, strict=True))


def test_region_masking_statistics_and_whole_image():
    rng = np.random.default_rng(0)
    regions = predicted = hidden = 0
    for _ in range(3000):
        predict, masked = mask_regions(11, rng)
        assert not predict[0] and not masked[0]
        assert not (masked & ~predict).any()  # only chosen regions are hidden
        regions += 10
        predicted += predict.sum()
        hidden += masked.sum()
    assert predicted / regions == pytest.approx(0.15, abs=0.006)
    assert hidden / predicted == pytest.approx(0.9, abs=0.015)
    predict, masked = mask_regions(1, rng, RegionMaskConfig(prob=1.0))
    assert not predict.any()


def original_whole_image(detections: np.ndarray, masked: np.ndarray) -> np.ndarray:
    """The original's steps (pretrain/data/datasets/conceptual_captions.py), written from its formulas: the mean of
    all detections times their number, minus each masked detection, over (unmasked + 1e-5)."""
    n = detections.shape[0]
    whole = detections.mean(0) * n
    for feature, hidden in zip(detections, masked, strict=True):
        if hidden:
            whole = whole - feature
    return whole / (n - masked.sum() + 1e-5)


@pytest.mark.parametrize("hidden", [[], [1], [0, 2], [0, 1, 2]])
def test_whole_image_feature_is_the_original_mean_of_unmasked(hidden):
    f = np.random.default_rng(4).random((4, 3), dtype=np.float32)
    masked = np.zeros(4, dtype=bool)
    masked[[h + 1 for h in hidden]] = True
    out = with_whole_image(f, masked)
    np.testing.assert_array_equal(out[1:], f[1:])
    assert out is not f and (f[0] == np.random.default_rng(4).random((4, 3), dtype=np.float32)[0]).all()
    if len(hidden) == 3:
        # Every detection masked: exactly 0. (The original's subtraction leaves float rounding, divided by 1e-5.)
        assert (out[0] == 0).all()
    else:
        np.testing.assert_allclose(out[0], original_whole_image(f[1:], masked[1:]), rtol=1e-6, atol=1e-7)
