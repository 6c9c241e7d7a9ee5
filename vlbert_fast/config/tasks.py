"""Options of each fine-tuning task (tasks/<name>/). One dataclass per task; `FinetuneConfig.task` names the task
whose options apply. An empty `root` means the task's synthetic version, generated from the synthetic world in
the exact official format and read by the same readers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class VQAOptions:
    root: str = ""
    """Directory with the official VQA v2 question and annotation JSON files (and the region features); empty: the
    synthetic VQA generated from the synthetic world."""


REFCOCO_BOXES = ("gt", "detected", "detected+gt")


@dataclass
class RefCOCOOptions:
    root: str = ""
    """Directory with refcoco+/refs(unc).p and instances.json (and the region features); empty: the synthetic
    RefCOCO+ generated from the synthetic world."""

    refs: str = "refcoco+/refs(unc).p"
    """The refer toolkit's refs pickle, relative to root (read with a data-only unpickler)."""

    instances: str = "refcoco+/instances.json"
    """COCO-style images and annotations (the ground-truth boxes and the targets), relative to root."""

    detections: str = "refcoco+/proposal/res101_coco_minus_refer_notime_dets.json"
    """Detected boxes for the detected-box protocol, relative to root: the original's list of {image_id, box:
    [x, y, w, h]}, the refer toolkit's {"dets": [...]}, or {"<image_id>": [[x1, y1, x2, y2], ...]}."""

    features: str = "features"
    """Region features of the RoIs keyed by image id, relative to root: a feature-shard directory, a
    bottom-up-attention .tsv, or a directory of <image_id>.json region files; it must hold a row for every box of
    the protocols used (matched by coordinates within box_match_tolerance)."""

    train_boxes: str = "gt"
    """RoIs when training: "gt" (the image's COCO annotation boxes), "detected" (the detections file) or
    "detected+gt" (both; the original trains its detected-box models so)."""

    eval_boxes: str = "gt"
    """RoIs when evaluating: "gt" or "detected" (the protocol the accuracy is reported for)."""

    max_regions: int = 100
    """RoIs per image at most (in file order, i.e. by detection confidence), besides the whole image."""

    max_expression_len: int = 40
    """Word pieces of an expression at most; longer ones are cut."""

    box_match_tolerance: float = 0.5
    """Pixels a RoI's box may differ from the feature record's box it takes its features from."""

    classifier_dropout: float = 0.0
    """Dropout before the per-RoI logit (the original's CLASSIFIER_DROPOUT: 0)."""

    synth_train_images: int = 800
    """Synthetic RefCOCO+ (empty root): images of the train split (2-4 objects each, one ref per object)."""

    synth_eval_images: int = 100
    """Synthetic RefCOCO+: images of each of val, testA and testB."""

    def __post_init__(self) -> None:
        if self.train_boxes not in REFCOCO_BOXES:
            raise ValueError(f"train_boxes must be one of {REFCOCO_BOXES}, found {self.train_boxes!r}")
        if self.eval_boxes not in ("gt", "detected"):
            raise ValueError(f"eval_boxes must be 'gt' or 'detected', found {self.eval_boxes!r}")
        if self.max_regions < 1 or self.max_expression_len < 1:
            raise ValueError("max_regions and max_expression_len must be at least 1")
        if self.box_match_tolerance < 0 or not 0.0 <= self.classifier_dropout < 1.0:
            raise ValueError("box_match_tolerance must be >= 0 and classifier_dropout in [0, 1)")
        if self.synth_train_images < 1 or self.synth_eval_images < 1:
            raise ValueError("synth_train_images and synth_eval_images must be at least 1")


@dataclass
class VCROptions:
    root: str = ""
    """Directory with the VCR jsonl files and the per-image metadata JSON (and the region features); empty: the
    synthetic VCR generated from the synthetic world."""
