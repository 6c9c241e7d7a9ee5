"""Box arithmetic of RefCOCO+: IoU, the per-RoI labels and the accuracy criterion. Boxes are (x1, y1, x2, y2) in
continuous image coordinates (the COCO bbox [x, y, w, h] is x2 = x + w, converted once by refer.py), so a box's
area is (x2 - x1) * (y2 - y1).

The original VL-BERT evaluates with the legacy "+1" pixel convention (areas (x2 - x1 + 1) * (y2 - y1 + 1)) on boxes
made with x2 = x + w, mixing the two conventions; we keep COCO's. For boxes of tens of pixels the two IoUs differ by
about a percent, which can flip a prediction right at the 0.5 boundary only.

Degenerate cases, by definition: a zero-area box has IoU 0 with everything, itself included (a point or a line
covers no area, so it cannot be a correct localisation); boxes that only touch have IoU 0.
"""

from __future__ import annotations

import numpy as np

LABEL_IOU = 0.5
"""A RoI is a positive when its IoU with the target is strictly above this (the original's label rule)."""
HIT_IOU = 0.5
"""A predicted box is correct when its IoU with the target is at least this (the original's accuracy rule)."""


def box_iou(a_N4: np.ndarray, b_M4: np.ndarray) -> np.ndarray:
    """[N, M] float64 IoU of every box of `a` with every box of `b` (module docstring for the conventions)."""
    a = np.asarray(a_N4, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b_M4, dtype=np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    degenerate = (area_a[:, None] <= 0) | (area_b[None, :] <= 0)
    return np.where(degenerate, 0.0, inter / np.where(union > 0, union, 1.0))


def region_labels(rois_R4: np.ndarray, target_4: np.ndarray) -> np.ndarray:
    """[R] float32 1.0 where IoU(RoI, target) > LABEL_IOU, else 0.0."""
    return (box_iou(rois_R4, target_4)[:, 0] > LABEL_IOU).astype(np.float32)


def is_hit(pred_4: np.ndarray, target_4: np.ndarray) -> bool:
    """The accuracy criterion: IoU(predicted box, target) >= HIT_IOU."""
    return bool(box_iou(pred_4, target_4)[0, 0] >= HIT_IOU)


def clip_boxes(boxes_N4: np.ndarray, width: float, height: float) -> np.ndarray:
    """Clipped into [0, W-1] x [0, H-1], as the pretraining loader clips detections (the whole-image box is
    [0, 0, W-1, H-1])."""
    return np.clip(np.asarray(boxes_N4, dtype=np.float32), 0.0, [width - 1, height - 1, width - 1, height - 1])
