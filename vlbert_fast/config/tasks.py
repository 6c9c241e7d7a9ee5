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


@dataclass
class RefCOCOOptions:
    root: str = ""
    """Directory with refcoco+/refs(unc).p and instances.json (and the region features); empty: the synthetic
    RefCOCO+ generated from the synthetic world."""


VCR_MODES = ("q2a", "qa2r")
VCR_LOSSES = ("softmax", "sigmoid")


@dataclass
class VCROptions:
    root: str = ""
    """Directory with the VCR jsonl files and the per-image metadata JSON (and the region features); empty: the
    synthetic VCR generated from the synthetic world."""

    mode: str = "q2a"
    """"q2a": pick the answer given the question; "qa2r": pick the rationale given the question and the right
    answer (the test split: given each of the 4 answers, as the leaderboard wants)."""

    train_file: str = "train.jsonl"
    """Annotations of the training split, relative to root."""

    val_file: str = "val.jsonl"
    """Annotations of the validation split, relative to root."""

    test_file: str = "test.jsonl"
    """Annotations of the test split (no labels), relative to root."""

    images: str = "vcr1images"
    """Folder of the images and metadata JSON that img_fn and metadata_fn are relative to (relative to root), or a
    zip spec such as "vcr1images.zip@/vcr1images"."""

    features: str = "features"
    """Precomputed mode: feature shards (relative to root) keyed by img_fn, one row per metadata box in the
    metadata's order (e.g. `vlbert-fast extract-features` on a boxes .jsonl with "image_id" = img_fn)."""

    max_text_len: int = 64
    """Word pieces of question + answer (Q->A) or question + answer + rationale (QA->R), without [CLS]/[SEP]; longer
    texts lose pieces from the end of the longer part, as the original truncates."""

    mask_size: int = 14
    """Side of the instance masks rasterised from the polygons (must equal model.visual.pooled_size; e2e only)."""

    classifier_dropout: float = 0.1
    """Dropout between the pooled [CLS] and the Linear(H -> 1) scorer (the original: 0.1)."""

    loss: str = "softmax"
    """"softmax": cross-entropy over the 4 choices; "sigmoid": the original configs' CLASSIFIER_SIGMOID, binary
    cross-entropy of each choice against 1 for the right one and 0 for the others, averaged."""

    q2a_predictions: str = ""
    """QA->R only: the Q->A CSV of the same split (written by the Q->A run's evaluate) to report the joint Q->AR
    accuracy too."""

    synth_max_objects: int = 3
    """Synthetic VCR: objects per image, 2..synth_max_objects (at most 4, one per shape)."""

    synth_train: int = 2000
    """Synthetic VCR: questions (one image each) in the training split."""

    synth_val: int = 300
    """Synthetic VCR: questions in the validation split."""

    synth_test: int = 100
    """Synthetic VCR: questions in the test split (written without labels)."""

    def __post_init__(self) -> None:
        if self.mode not in VCR_MODES:
            raise ValueError(f"mode must be one of {VCR_MODES}, found {self.mode!r}")
        if self.loss not in VCR_LOSSES:
            raise ValueError(f"loss must be one of {VCR_LOSSES}, found {self.loss!r}")
        if self.max_text_len < 2:
            raise ValueError(f"max_text_len must be at least 2, found {self.max_text_len}")
        if self.mask_size < 1:
            raise ValueError(f"mask_size must be at least 1, found {self.mask_size}")
        if not 0.0 <= self.classifier_dropout < 1.0:
            raise ValueError(f"classifier_dropout must be in [0, 1), found {self.classifier_dropout}")
        if not 2 <= self.synth_max_objects <= 4:
            raise ValueError(f"synth_max_objects must be in 2..4, found {self.synth_max_objects}")
        if self.synth_train < 1 or self.synth_val < 1 or self.synth_test < 1:
            raise ValueError("synth_train, synth_val and synth_test must be at least 1")
