"""From per-sample `Example`s to one `Batch`: the sequence layout of README.md ("The model, exactly"), made once, here.

Each sample becomes `[CLS] text [SEP] ([SEP B]) [RoI_0 ... RoI_{R-1}] [END]`, contiguous, padded at the end:
- positions: text token i -> i; every RoI -> T (the text length); [END] -> T + 1;
- token types: the text's own (0 sentence A, 1 sentence B); RoIs and [END] -> 2;
- visual index: a text token takes the region it is tagged with (region 0, the whole image, unless the task tags a
  detection); a RoI takes itself; text-only samples (R = 0) and [END] take none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .batch import IGNORE_INDEX, Batch, TokenKind

VISUAL_TOKEN_TYPE = 2


@dataclass
class Example:
    """One tokenised (and possibly masked) sample. Legend: T text tokens, R regions (0 for text-only)."""

    input_ids: torch.Tensor
    """[T] int64 ids of `[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]`."""
    token_type_ids: torch.Tensor | None = None
    """[T] int64 0 for sentence A, 1 for sentence B; zeros when None."""
    text_visual_index: torch.Tensor | None = None
    """[T] int64 region (0..R-1) whose visual feature each text token adds; region 0 when None."""
    mlm_labels: torch.Tensor | None = None
    """[T] int64 targets of masked tokens, IGNORE_INDEX elsewhere."""
    boxes: torch.Tensor | None = None
    """[R, 4] float (x1, y1, x2, y2); row 0 is the whole image. None for a text-only sample."""
    image_size: tuple[float, float] | None = None
    """(W, H) of the image the boxes live in."""
    region_features: torch.Tensor | None = None
    """[R, Dv] float appearance features (precomputed mode)."""
    region_masked: torch.Tensor | None = None
    """[R] bool regions whose appearance is hidden."""
    region_predict: torch.Tensor | None = None
    """[R] bool regions whose class is predicted."""
    roi_targets: torch.Tensor | None = None
    """[R, C] float soft class labels."""
    image: torch.Tensor | None = None
    """[3, h, w] float normalised pixels (end-to-end mode), with the masked regions' pixels already zeroed; boxes
    and image_size are in these pixels."""
    relationship_label: int | None = None
    """1: the caption belongs to the image, 0: it was drawn from another record (the relationship task); None: no
    target."""
    region_masks: torch.Tensor | None = None
    """[R, P, P] float 0/1 instance masks in each box's frame (VCR's polygons), multiplied into the region's RoIAlign
    output before the res5 head in end-to-end mode; unused with precomputed features. None: no mask."""

    @property
    def num_text(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def num_regions(self) -> int:
        return 0 if self.boxes is None else int(self.boxes.shape[0])

    @property
    def length(self) -> int:
        """Tokens in the packed sample: text + regions + [END]."""
        return self.num_text + self.num_regions + 1


def _optional_cat(parts: list[torch.Tensor | None], name: str, present: list[bool]) -> torch.Tensor | None:
    """Concatenates a per-region field; all samples with regions must have it, or none."""
    given = [p is not None for p, has in zip(parts, present, strict=True) if has]
    if not any(given):
        return None
    if not all(given):
        raise ValueError(f"collate: {name} is given for some samples with regions but not for others")
    return torch.cat([p for p, has in zip(parts, present, strict=True) if has and p is not None])


def _pad_images(parts: list[torch.Tensor | None], present: list[bool]) -> torch.Tensor | None:
    """[I, 3, H, W]: the images of the samples with regions, zero-padded at the bottom and right to the largest."""
    images = [p for p, has in zip(parts, present, strict=True) if has]
    if all(p is None for p in images):
        return None
    if any(p is None for p in images):
        raise ValueError("collate: image is given for some samples with regions but not for others")
    height, width = max(p.shape[1] for p in images), max(p.shape[2] for p in images)
    out = images[0].new_zeros(len(images), 3, height, width)
    for i, image in enumerate(images):
        out[i, :, : image.shape[1], : image.shape[2]] = image
    return out


def collate(examples: Sequence[Example]) -> Batch:
    """Builds the padded token layout and the flattened regions of a batch (module docstring)."""
    if not examples:
        raise ValueError("collate: no examples")
    bsz = len(examples)
    max_len = max(ex.length for ex in examples)
    input_ids = torch.zeros(bsz, max_len, dtype=torch.long)
    token_type_ids = torch.zeros(bsz, max_len, dtype=torch.long)
    position_ids = torch.zeros(bsz, max_len, dtype=torch.long)
    token_kind = torch.full((bsz, max_len), int(TokenKind.PAD), dtype=torch.long)
    visual_index = torch.full((bsz, max_len), -1, dtype=torch.long)
    attention_mask = torch.zeros(bsz, max_len, dtype=torch.bool)
    mlm_labels = torch.full((bsz, max_len), IGNORE_INDEX, dtype=torch.long)
    image_size = torch.ones(bsz, 2)

    offset = 0
    has_regions = []
    for row, ex in enumerate(examples):
        t, r = ex.num_text, ex.num_regions
        if r and ex.image_size is None:
            raise ValueError(f"collate: sample {row} has boxes but no image_size")
        input_ids[row, :t] = ex.input_ids
        if ex.token_type_ids is not None:
            token_type_ids[row, :t] = ex.token_type_ids
        token_type_ids[row, t : t + r + 1] = VISUAL_TOKEN_TYPE
        position_ids[row, :t] = torch.arange(t)
        position_ids[row, t : t + r] = t
        position_ids[row, t + r] = t + 1
        token_kind[row, :t] = int(TokenKind.TEXT if r else TokenKind.TEXT_ONLY)
        token_kind[row, t : t + r] = int(TokenKind.ROI)
        token_kind[row, t + r] = int(TokenKind.END)
        attention_mask[row, : t + r + 1] = True
        if r:
            tags = ex.text_visual_index if ex.text_visual_index is not None else torch.zeros(t, dtype=torch.long)
            visual_index[row, :t] = offset + tags
            visual_index[row, t : t + r] = offset + torch.arange(r)
            image_size[row] = torch.tensor(ex.image_size, dtype=torch.float32)
        if ex.mlm_labels is not None:
            mlm_labels[row, :t] = ex.mlm_labels
        offset += r
        has_regions.append(r > 0)

    def regions(name: str) -> list:
        return [getattr(ex, name) for ex in examples]

    boxes = _optional_cat(regions("boxes"), "boxes", has_regions)
    if boxes is None:
        boxes = torch.zeros(0, 4)
    k = boxes.shape[0]
    region_sample = torch.repeat_interleave(
        torch.arange(bsz), torch.tensor([ex.num_regions for ex in examples], dtype=torch.long)
    )
    region_masked = _optional_cat(regions("region_masked"), "region_masked", has_regions)
    region_predict = _optional_cat(regions("region_predict"), "region_predict", has_regions)
    return Batch(
        input_ids=input_ids,
        token_type_ids=token_type_ids,
        position_ids=position_ids,
        token_kind=token_kind,
        visual_index=visual_index,
        attention_mask=attention_mask,
        boxes=boxes.float(),
        region_sample=region_sample,
        region_masked=region_masked if region_masked is not None else torch.zeros(k, dtype=torch.bool),
        image_size=image_size,
        region_features=_optional_cat(regions("region_features"), "region_features", has_regions),
        mlm_labels=mlm_labels,
        region_predict=region_predict,
        roi_targets=_optional_cat(regions("roi_targets"), "roi_targets", has_regions),
        images=_pad_images(regions("image"), has_regions),
        region_masks=_optional_cat(regions("region_masks"), "region_masks", has_regions),
        relationship_labels=_relationship_labels(examples),
    )


def _relationship_labels(examples: Sequence[Example]) -> torch.Tensor | None:
    """[B] int64, IGNORE_INDEX where a row has none; None when no row has one."""
    labels = [ex.relationship_label for ex in examples]
    if all(label is None for label in labels):
        return None
    return torch.tensor([IGNORE_INDEX if label is None else int(label) for label in labels], dtype=torch.long)
