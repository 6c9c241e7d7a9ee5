"""The words every floor shares, at the bottom of the package so that data, kernels, ops and the model read the same
ones without importing each other: what a token position holds, the label of positions without a target, and the
training precisions' dtypes."""

from __future__ import annotations

from enum import IntEnum

import torch

IGNORE_INDEX = -100
"""Label value of positions without a target (the cross-entropy ignore index)."""


class TokenKind(IntEnum):
    """What a token position holds; decides which embeddings it sums (README.md, "The model, exactly")."""

    TEXT = 0
    """Text token of a row with an image: word + visual_ln_text(visual feature of its tagged region)."""
    TEXT_ONLY = 1
    """Text token of a text-only row: word + the learned text-visual embedding."""
    ROI = 2
    """Region: [IMG] (or the masked-RoI word embedding) + visual_ln_object(its own visual feature)."""
    END = 3
    """The learned [END] token closing every sample."""
    PAD = 4
    """Padding after the sample; excluded by attention_mask."""


PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""`train.precision` -> the dtype the model computes in."""
