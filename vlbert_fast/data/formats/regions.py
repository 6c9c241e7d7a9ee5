"""`RegionRecord`: the detections of one image, as every region-feature reader returns them and every writer takes
them. Legend: N detections, D feature width (2048 for the bottom-up-attention ResNet-101), C detector classes
(1601 for Visual Genome: background + 1600 objects)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import FormatError


@dataclass
class RegionRecord:
    """One image's detections. Boxes are the detector's only: the whole-image box is added later by the loader."""

    image_id: str
    image_w: int
    image_h: int
    boxes: np.ndarray
    """[N, 4] float32 (x1, y1, x2, y2) in image pixels, in the detector's order (by confidence)."""
    features: np.ndarray
    """[N, D] float32 appearance features."""
    classes: np.ndarray | None = None
    """[N, C] float32 soft class labels (the detector's class distribution), or None."""
    image_box_feature: np.ndarray | None = None
    """[D] float32 feature of the whole-image box, when the extractor computed one; None: the loader averages."""

    @property
    def num_boxes(self) -> int:
        return int(self.boxes.shape[0]) if isinstance(self.boxes, np.ndarray) and self.boxes.ndim >= 1 else 0

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])


def _check_array(source: str, image_id: object, field: str, value: object, ndim: int) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise FormatError(source, image_id, field, f"a numpy array of {ndim} dimensions", type(value).__name__)
    if value.ndim != ndim:
        raise FormatError(source, image_id, field, f"{ndim} dimensions", f"shape {tuple(value.shape)}")
    if not np.issubdtype(value.dtype, np.floating):
        raise FormatError(source, image_id, field, "floating-point values", f"dtype {value.dtype}")
    if not np.isfinite(value).all():
        bad = np.argwhere(~np.isfinite(value))[0]
        raise FormatError(
            source, image_id, field, "finite values", f"{value[tuple(bad)]} at index {tuple(int(i) for i in bad)}"
        )
    return value


def clip_to_image(boxes_N4: np.ndarray, width: float, height: float, source: str) -> np.ndarray:
    """The one rule for boxes against their image, in every mode (precomputed features and end to end, pretraining and
    the tasks): a box partly outside [0, W-1] x [0, H-1] is clipped into it (detectors emit such boxes); a box wholly
    outside it is an error naming `source` (the record's boxes belong to another image, size or orientation), which
    skip mode counts and skips with its record. Returns float32 [N, 4]."""
    boxes = np.asarray(boxes_N4, dtype=np.float32).reshape(-1, 4)
    w, h = float(width), float(height)
    outside = (boxes[:, 0] > w - 1) | (boxes[:, 1] > h - 1) | (boxes[:, 2] < 0) | (boxes[:, 3] < 0)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise FormatError(
            source,
            message=f"box {i} = {boxes[i].tolist()} lies wholly outside the {w:g} x {h:g} image "
            f"({int(outside.sum())} such)",
            reason="box outside image",
        )
    return np.clip(boxes, 0.0, [w - 1, h - 1, w - 1, h - 1]).astype(np.float32)


def validate(source: str, record: RegionRecord) -> None:
    """Raises FormatError naming `source` and the image when the record is inconsistent (see the checks below).

    Boxes partly or wholly outside the image pass here (the loaders apply `clip_to_image`), reversed boxes do not.
    """
    rid = record.image_id
    if not isinstance(rid, str) or not rid:
        raise FormatError(source, None, "image_id", "a non-empty string", repr(rid))
    for field in ("image_w", "image_h"):
        value = getattr(record, field)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise FormatError(source, rid, field, "a positive integer", repr(value))
    boxes = _check_array(source, rid, "boxes", record.boxes, 2)
    if boxes.shape[1] != 4:
        raise FormatError(source, rid, "boxes", "4 values per box (x1, y1, x2, y2)", f"shape {tuple(boxes.shape)}")
    num = boxes.shape[0]
    features = _check_array(source, rid, "features", record.features, 2)
    if features.shape[0] != num:
        raise FormatError(source, rid, "features", f"{num} rows (one per box)", f"{features.shape[0]} rows")
    reversed_ = np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
    if reversed_.size:
        i = int(reversed_[0])
        raise FormatError(
            source, rid, "boxes", "x2 >= x1 and y2 >= y1", f"box {i} = {boxes[i].tolist()} ({reversed_.size} such)"
        )
    if record.classes is not None:
        classes = _check_array(source, rid, "classes", record.classes, 2)
        if classes.shape[0] != num:
            raise FormatError(source, rid, "classes", f"{num} rows (one per box)", f"{classes.shape[0]} rows")
    if record.image_box_feature is not None:
        whole = _check_array(source, rid, "image_box_feature", record.image_box_feature, 1)
        if whole.shape[0] != features.shape[1]:
            raise FormatError(
                source, rid, "image_box_feature", f"{features.shape[1]} values (the feature width)", whole.shape[0]
            )
