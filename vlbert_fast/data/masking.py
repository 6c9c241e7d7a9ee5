"""Masking for pretraining, as the original VL-BERT does it (pretrain/data/datasets/conceptual_captions.py).

Words (masked language modelling with visual clues), `random_word_wwm` in the original: each whole word is chosen
with probability `prob` (15%); a chosen word's pieces all get labels, and the word is replaced — one draw per word —
by [MASK] in every piece (80%), by a random vocabulary token per piece (10%), or kept (10%). Special tokens are
never chosen, and random replacements never draw a special token.

Regions (masked RoI classification with linguistic clues), `random_mask_region` in the original: each detection is
chosen with probability `prob` (15%); of the chosen, `mask_fraction` (90%) have their appearance hidden, the rest
are kept, and all chosen regions are predicted. The whole-image region 0 is never chosen. In precomputed mode the
whole-image appearance is the mean of all the record's unmasked detections, taken before truncation
(`with_whole_image`).

All draws come from a numpy Generator the caller seeds per (seed, epoch, sample), so masking is reproducible and a
resumed run masks exactly as the uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .batch import IGNORE_INDEX


@dataclass(frozen=True)
class WordMaskConfig:
    prob: float = 0.15
    mask: float = 0.8
    random: float = 0.1
    # the remaining 1 - mask - random keep the word


class WordMasker:
    """Whole-word masking over one vocabulary (the random-replacement candidates are built once)."""

    def __init__(self, mask_id: int, vocab_size: int, special_ids: set[int], cfg: WordMaskConfig = WordMaskConfig()):
        if not 0 <= cfg.mask + cfg.random <= 1:
            raise ValueError(f"word masking: mask {cfg.mask} + random {cfg.random} must be within [0, 1]")
        self.mask_id = mask_id
        self.cfg = cfg
        self.candidates = np.array([v for v in range(vocab_size) if v not in special_ids], dtype=np.int64)

    def __call__(
        self, ids: Sequence[int], word_ids: Sequence[int], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """`word_ids[i]` is the word of piece i (-1 for special tokens, never chosen).

        Returns (input ids after masking, labels with IGNORE_INDEX on unchosen pieces), both int64 [T].
        """
        ids_arr = np.asarray(ids, dtype=np.int64)
        words = np.asarray(word_ids, dtype=np.int64)
        if ids_arr.shape != words.shape:
            raise ValueError(f"word masking: ids has {ids_arr.shape[0]} pieces but word_ids {words.shape[0]}")
        out = ids_arr.copy()
        labels = np.full_like(ids_arr, IGNORE_INDEX)
        cfg = self.cfg
        for word in np.unique(words[words >= 0]):
            if rng.random() >= cfg.prob:
                continue
            pieces = np.nonzero(words == word)[0]
            labels[pieces] = ids_arr[pieces]
            action = rng.random()
            if action < cfg.mask:
                out[pieces] = self.mask_id
            elif action < cfg.mask + cfg.random:
                out[pieces] = self.candidates[rng.integers(0, len(self.candidates), size=len(pieces))]
        return out, labels


@dataclass(frozen=True)
class RegionMaskConfig:
    prob: float = 0.15
    mask_fraction: float = 0.9


def mask_regions(
    num_regions: int, rng: np.random.Generator, cfg: RegionMaskConfig = RegionMaskConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (predict, masked), bool [R]; region 0 (the whole image) is never chosen."""
    predict = np.zeros(num_regions, dtype=bool)
    masked = np.zeros(num_regions, dtype=bool)
    for k in range(1, num_regions):
        if rng.random() < cfg.prob:
            predict[k] = True
            masked[k] = rng.random() < cfg.mask_fraction
    return predict, masked


def with_whole_image(features: np.ndarray, masked: np.ndarray) -> np.ndarray:
    """Row 0 (the whole image) becomes the mean of the unmasked detections (rows 1..) as the original computes it
    (pretrain/data/datasets/conceptual_captions.py): their sum over (their number + 1e-5), so 0 when every
    detection is masked (nothing of the masked regions may reach it). The caller passes every detection of the
    record, before truncation, as the original does."""
    out = features.copy()
    keep = ~masked[1:]
    out[0] = features[1:][keep].sum(axis=0, dtype=np.float32) / np.float32(keep.sum() + 1e-5)
    return out
