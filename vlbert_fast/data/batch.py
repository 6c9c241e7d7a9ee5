"""`Batch`: the one typed container a batch travels in from collation to the loss.

Legend: B samples, L the longest sample in tokens, K regions over the whole batch, Dv appearance width,
C detector classes.

Tokens are stored per sample, padded at the end only: each row is `[CLS] text [SEP] [RoI ...] [END]` with no gaps
between the parts, so the packed stream for varlen attention is `x[attention_mask]` with `cu_seqlens` from the row
lengths. Regions are flattened over the batch (`region_sample` says whose) and sorted by sample; each image's first
region is its whole-image box. A token finds its visual feature through `visual_index`, an index into the K regions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..vocabulary import IGNORE_INDEX, TokenKind

__all__ = ["IGNORE_INDEX", "Batch", "InvalidBatchError", "TokenKind"]


class InvalidBatchError(ValueError):
    """A batch that breaks the model's contract; the message names the tensor, the position and the problem."""


@dataclass
class Batch:
    # tokens, [B, L]
    input_ids: torch.Tensor
    """[B, L] int64 word-piece ids on text tokens (0 elsewhere)."""
    token_type_ids: torch.Tensor
    """[B, L] int64: 0 sentence A, 1 sentence B, 2 RoIs and [END]."""
    position_ids: torch.Tensor
    """[B, L] int64: text token i -> i, every RoI -> text length, [END] -> text length + 1."""
    token_kind: torch.Tensor
    """[B, L] int64 `TokenKind` values."""
    visual_index: torch.Tensor
    """[B, L] int64 index into the K regions of the region whose visual feature the token adds; -1 for none."""
    attention_mask: torch.Tensor
    """[B, L] bool, True on the tokens of the sample (a prefix of each row)."""

    # regions, [K] (flattened over the batch, sorted by sample)
    boxes: torch.Tensor
    """[K, 4] float (x1, y1, x2, y2) in image pixels; each image's first region is [0, 0, W-1, H-1]."""
    region_sample: torch.Tensor
    """[K] int64 row of the sample each region belongs to, non-decreasing."""
    region_masked: torch.Tensor
    """[K] bool: the region's appearance is hidden from the model (masked-RoI modelling)."""
    image_size: torch.Tensor
    """[B, 2] float (W, H) of each sample's image; (1, 1) for text-only rows."""
    region_features: torch.Tensor | None = None
    """[K, Dv] float precomputed appearance features (precomputed mode)."""
    images: torch.Tensor | None = None
    """[I, 3, H, W] float normalised pixels of the I samples that have regions, in row order, zero-padded at the
    bottom and right to the largest (end-to-end mode); boxes and image_size are in these pixels."""

    # targets
    mlm_labels: torch.Tensor | None = None
    """[B, L] int64 target word of each masked text token, IGNORE_INDEX elsewhere."""
    region_predict: torch.Tensor | None = None
    """[K] bool regions whose class the masked-RoI head predicts (masked ones and the kept 10% of the chosen)."""
    roi_targets: torch.Tensor | None = None
    """[K, C] float soft class distribution of each region from the detector."""
    relationship_labels: torch.Tensor | None = None
    """[B] int64 sentence-image relationship target of each row: 1 the caption belongs to the image, 0 it was drawn
    from another record, IGNORE_INDEX for rows without one (text-only rows); only with model.relationship_head."""

    # optional region inputs of some tasks
    region_masks: torch.Tensor | None = None
    """[K, P, P] float 0/1 instance mask of each region in its box's frame (VCR), multiplied into the RoIAlign output
    in end-to-end mode (P = model.visual.pooled_size); ignored with precomputed features."""

    # ---------------------------------------------------------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_regions(self) -> int:
        return self.boxes.shape[0]

    @property
    def seq_lens(self) -> torch.Tensor:
        """[B] int64 tokens per sample."""
        return self.attention_mask.sum(1)

    @property
    def cu_seqlens(self) -> torch.Tensor:
        """[B+1] int32 cumulative sample lengths of the packed stream, as varlen attention takes them."""
        return torch.nn.functional.pad(self.seq_lens.cumsum(0), (1, 0)).to(torch.int32)

    @property
    def has_image(self) -> torch.Tensor:
        """[B] bool: the sample has regions (False for text-only rows)."""
        counts = torch.bincount(self.region_sample, minlength=self.num_samples)
        return counts > 0

    @property
    def region_image(self) -> torch.Tensor:
        """[K] int64 index into `images` of each region's image (the samples with regions, in row order)."""
        image_of_row = torch.cumsum(self.has_image.long(), 0) - 1
        return image_of_row[self.region_sample]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None, non_blocking: bool = False) -> Batch:
        """Moves every tensor to `device`; `dtype` casts the appearance features and images (the compute precision).
        Boxes and image sizes stay fp32: pixel coordinates need the mantissa (bf16 cannot tell 999 from 1000)."""
        moved = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                cast = (
                    dtype if (dtype is not None and f.name in ("region_features", "images", "region_masks")) else None
                )
                v = v.to(device=device, dtype=cast, non_blocking=non_blocking)
            moved[f.name] = v
        return Batch(**moved)

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True)."""
        pinned = {
            f.name: (v.pin_memory() if isinstance(v, torch.Tensor) else v)
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        }
        return Batch(**pinned)

    # ---------------------------------------------------------------------------------------------------------------
    def validate(
        self,
        vocab_size: int,
        max_positions: int,
        type_vocab_size: int = 3,
        feature_dim: int | None = None,
        num_classes: int | None = None,
    ) -> None:
        """Raises InvalidBatchError naming the tensor and the first bad position when the batch breaks the contract."""
        _check_shapes(self, feature_dim, num_classes)
        _check_values(self, vocab_size, max_positions, type_vocab_size)


def _fail(message: str) -> None:
    raise InvalidBatchError(message)


def _first(mask: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in mask.nonzero()[0])


def _check_shapes(b: Batch, feature_dim: int | None, num_classes: int | None) -> None:
    if b.input_ids.dim() != 2:
        _fail(f"input_ids: expected shape [B, L], found {tuple(b.input_ids.shape)}")
    bl = tuple(b.input_ids.shape)
    for name in ("token_type_ids", "position_ids", "token_kind", "visual_index", "attention_mask", "mlm_labels"):
        t = getattr(b, name)
        if t is None:
            continue
        if tuple(t.shape) != bl:
            _fail(f"{name}: shape {tuple(t.shape)} does not match input_ids {bl}")
        if name == "attention_mask":
            if t.dtype != torch.bool:
                _fail(f"attention_mask: expected dtype torch.bool, found {t.dtype}")
        elif t.dtype not in (torch.int64, torch.int32):
            _fail(f"{name}: expected an integer dtype (int64), found {t.dtype}")
    if b.boxes.dim() != 2 or b.boxes.shape[1] != 4:
        _fail(f"boxes: expected shape [K, 4], found {tuple(b.boxes.shape)}")
    if not b.boxes.is_floating_point():
        _fail(f"boxes: expected a floating dtype, found {b.boxes.dtype}")
    k = b.boxes.shape[0]
    for name, want_dtype in (("region_sample", None), ("region_masked", torch.bool), ("region_predict", torch.bool)):
        t = getattr(b, name)
        if t is None:
            continue
        if tuple(t.shape) != (k,):
            _fail(f"{name}: expected shape [K] = ({k},) to match boxes, found {tuple(t.shape)}")
        if want_dtype is not None and t.dtype != want_dtype:
            _fail(f"{name}: expected dtype {want_dtype}, found {t.dtype}")
    if b.region_features is not None:
        f = b.region_features
        if f.dim() != 2 or f.shape[0] != k:
            _fail(f"region_features: expected shape [K, Dv] with K = {k} (boxes), found {tuple(f.shape)}")
        if feature_dim is not None and f.shape[1] != feature_dim:
            _fail(f"region_features: expected width {feature_dim} (model.visual_feature_dim), found {f.shape[1]}")
    if b.roi_targets is not None:
        t = b.roi_targets
        if t.dim() != 2 or t.shape[0] != k:
            _fail(f"roi_targets: expected shape [K, C] with K = {k} (boxes), found {tuple(t.shape)}")
        if num_classes is not None and t.shape[1] != num_classes:
            _fail(f"roi_targets: expected {num_classes} classes (model.num_roi_classes), found {t.shape[1]}")
    if b.images is not None:
        num_images = int(b.has_image.sum())
        if b.images.dim() != 4 or b.images.shape[0] != num_images or b.images.shape[1] != 3:
            _fail(
                f"images: expected shape [I, 3, H, W] with I = {num_images} (samples with regions), "
                f"found {tuple(b.images.shape)}"
            )
        if not b.images.is_floating_point():
            _fail(f"images: expected normalised floating-point pixels, found {b.images.dtype}")
    if b.region_masks is not None:
        m = b.region_masks
        if m.dim() != 3 or m.shape[0] != k or m.shape[1] != m.shape[2]:
            _fail(f"region_masks: expected shape [K, P, P] with K = {k} (boxes), found {tuple(m.shape)}")
    if tuple(b.image_size.shape) != (bl[0], 2):
        _fail(f"image_size: expected shape [B, 2] = ({bl[0]}, 2), found {tuple(b.image_size.shape)}")
    rel = b.relationship_labels
    if rel is not None and (tuple(rel.shape) != (bl[0],) or rel.dtype != torch.int64):
        _fail(f"relationship_labels: expected int64 of shape [B] = ({bl[0]},), found {rel.dtype} {tuple(rel.shape)}")


def _check_values(b: Batch, vocab_size: int, max_positions: int, type_vocab_size: int) -> None:
    mask = b.attention_mask
    if bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        _fail(f"attention_mask: row {_first(mask[:, 1:] & ~mask[:, :-1])[0]} has a gap; samples must be a prefix")
    if bool((~mask[:, 0]).any()):
        _fail(f"attention_mask: row {_first(~mask[:, 0])[0]} is empty")
    kind = b.token_kind
    valid_kinds = (kind >= 0) & (kind <= int(TokenKind.PAD))
    if not bool(valid_kinds.all()):
        _fail(f"token_kind: value {int(kind[~valid_kinds][0])} at {_first(~valid_kinds)} is not a TokenKind")
    if bool((mask & (kind == TokenKind.PAD)).any()) or bool((~mask & (kind != TokenKind.PAD)).any()):
        _fail("token_kind: PAD must mark exactly the positions outside attention_mask")
    text = (kind == TokenKind.TEXT) | (kind == TokenKind.TEXT_ONLY)
    ids = b.input_ids
    bad = text & ((ids < 0) | (ids >= vocab_size))
    if bool(bad.any()):
        _fail(f"input_ids: id {int(ids[bad][0])} at {_first(bad)} is outside the vocabulary [0, {vocab_size})")
    types = b.token_type_ids
    bad = mask & ((types < 0) | (types >= type_vocab_size))
    if bool(bad.any()):
        _fail(f"token_type_ids: {int(types[bad][0])} at {_first(bad)} is outside [0, {type_vocab_size})")
    pos = b.position_ids
    bad = mask & ((pos < 0) | (pos >= max_positions))
    if bool(bad.any()):
        _fail(
            f"position_ids: {int(pos[bad][0])} at {_first(bad)} is outside [0, {max_positions}) "
            f"(text longer than model.max_position_embeddings - 2?)"
        )
    if b.mlm_labels is not None:
        labels = b.mlm_labels
        labelled = labels != IGNORE_INDEX
        bad = labelled & (~text | (labels < 0) | (labels >= vocab_size))
        if bool(bad.any()):
            _fail(
                f"mlm_labels: {int(labels[bad][0])} at {_first(bad)} is not a vocabulary id on a text token "
                f"(use {IGNORE_INDEX} for positions without a target)"
            )
    rel = b.relationship_labels
    if rel is not None:
        bad = (rel != IGNORE_INDEX) & ((rel < 0) | (rel > 1) | ~b.has_image)
        if bool(bad.any()):
            _fail(
                f"relationship_labels: {int(rel[bad][0])} at row {_first(bad)[0]}: expected 0 or 1 on rows with an "
                f"image, {IGNORE_INDEX} elsewhere"
            )
    k = b.num_regions
    vi = b.visual_index
    needs_region = (kind == TokenKind.TEXT) | (kind == TokenKind.ROI)
    bad = (needs_region & ((vi < 0) | (vi >= k))) | (~needs_region & (vi != -1))
    if bool(bad.any()):
        _fail(
            f"visual_index: {int(vi[bad][0])} at {_first(bad)} is wrong for a {TokenKind(int(kind[bad][0])).name} "
            f"token (text and RoI tokens need a region in [0, {k}), others -1)"
        )
    rows = torch.arange(b.num_samples, device=vi.device)[:, None].expand_as(vi)
    if k:
        owner = b.region_sample[vi.clamp(min=0)]
        bad = needs_region & (owner != rows)
        if bool(bad.any()):
            _fail(f"visual_index: token at {_first(bad)} points to region {int(vi[bad][0])} of another sample")
        rs = b.region_sample
        if bool(((rs < 0) | (rs >= b.num_samples)).any()):
            _fail(f"region_sample: values must be sample rows in [0, {b.num_samples}), found {rs.min()}..{rs.max()}")
        if bool((rs[1:] < rs[:-1]).any()):
            _fail("region_sample: regions must be sorted by sample (non-decreasing)")
    boxes = b.boxes
    if not bool(torch.isfinite(boxes).all()):
        _fail(f"boxes: non-finite coordinate in region {_first(~torch.isfinite(boxes))[0]}")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bool(bad.any()):
        i = _first(bad)[0]
        _fail(f"boxes: region {i} has x2 < x1 or y2 < y1: {boxes[i].tolist()} (expected x1, y1, x2, y2)")
    if not bool(torch.isfinite(b.image_size).all()) or bool((b.image_size <= 0).any()):
        _fail(f"image_size: every (W, H) must be positive and finite, found {b.image_size.tolist()}")
    if b.images is not None and k:
        size = b.image_size[b.has_image]
        too_big = (size[:, 0] > b.images.shape[3]) | (size[:, 1] > b.images.shape[2])
        if bool(too_big.any()):
            i = _first(too_big)[0]
            _fail(
                f"image_size: image {i} is {size[i].tolist()} (W, H) but the padded images are only "
                f"{b.images.shape[3]} x {b.images.shape[2]}"
            )
    if b.region_features is not None and not bool(torch.isfinite(b.region_features).all()):
        _fail(f"region_features: NaN or inf in region {_first(~torch.isfinite(b.region_features))[0]}")
    if b.roi_targets is not None and not bool(torch.isfinite(b.roi_targets).all()):
        _fail(f"roi_targets: NaN or inf in region {_first(~torch.isfinite(b.roi_targets))[0]}")
