"""RefCOCO+: the refer toolkit's files, the ground-truth-box and detected-box protocols, the per-RoI head, the
accuracy at IoU 0.5, and a synthetic version written in the same files (synth.py)."""

from .boxes import box_iou, clip_boxes, is_hit, region_labels
from .refer import read_detections, read_instances, read_refs
from .synth import cached_refcoco, generate_refcoco
from .task import RefCOCOHead, RefCOCOTask

__all__ = [
    "RefCOCOHead",
    "RefCOCOTask",
    "box_iou",
    "cached_refcoco",
    "clip_boxes",
    "generate_refcoco",
    "is_hit",
    "read_detections",
    "read_instances",
    "read_refs",
    "region_labels",
]
