"""Options of each fine-tuning task (tasks/<name>/). One dataclass per task; `FinetuneConfig.task` names the task
whose options apply. An empty `root` means the task's synthetic version, generated from the synthetic world in
the exact official format and read by the same readers."""

from __future__ import annotations

from dataclasses import dataclass, field

from .synth_world import SynthConfig


@dataclass
class VQAOptions:
    root: str = ""
    """Directory with the official VQA v2 question and annotation JSON files (and the region features); empty: the
    synthetic VQA generated from the synthetic world."""

    questions: str = "v2_OpenEnded_mscoco_{split}_questions.json"
    """Question file of a split, relative to root; `{split}` is replaced by the split's name."""

    annotations: str = "v2_mscoco_{split}_annotations.json"
    """Annotation file of a split, relative to root (test splits have none)."""

    train_split: str = "train2014"
    """The split trained on."""

    val_split: str = "val2014"
    """The split evaluated during training (`vlbert-fast evaluate --split val` reads it)."""

    test_split: str = "test-dev2015"
    """The split without annotations whose predictions are submitted (`--split test`)."""

    trainval: bool = False
    """Also train on the val split (the original's train2014+val2014, for a test-dev submission). Off by default:
    the val metric is then no longer held out, and the log says so."""

    answer_vocab: str = ""
    """Answer vocabulary file (one answer per line, the index is the class), relative to root or absolute; empty:
    built from the training annotations (the `num_answers` most frequent normalised answers) and saved as
    answers.txt in the run directory, where evaluation finds it."""

    num_answers: int = 3129
    """Size of a built answer vocabulary (the original's answers_vqa.txt: 3129)."""

    features: str = "features"
    """Region features: a feature-shard directory (`vlbert-fast convert-features`), relative to root or absolute."""

    image_key: str = "{image_id}"
    """Key of an image's regions in the shards, from its integer image_id (Python format; e.g. "{image_id:012d}")."""

    tokenizer: str = "tokenizer"
    """Directory with the WordPiece vocab.txt of the pretrained model, relative to root or absolute."""

    max_regions: int = 100
    """Detections per image, highest confidence first (the whole-image region comes on top)."""

    max_question_tokens: int = 40
    """Word pieces of a question kept (VQA v2 questions are shorter than 25 pieces but a few)."""

    synth: SynthConfig = field(default_factory=SynthConfig)
    """The synthetic world the synthetic VQA is made from (root empty): the pretraining run's world, so that the
    tokenizer and the region features are those the model was pretrained on."""

    synth_questions_per_image: int = 2
    """Synthetic VQA: questions asked about each image (kinds drawn at random: colour, shape, count)."""

    synth_noise: float = 0.2
    """Synthetic VQA: chance that each of a question's 10 human answers is a wrong one of the same kind."""

    def __post_init__(self) -> None:
        if self.num_answers < 1 or self.max_regions < 1 or self.max_question_tokens < 1:
            raise ValueError("num_answers, max_regions and max_question_tokens must be >= 1")
        if "{split}" not in self.questions or "{split}" not in self.annotations:
            raise ValueError("questions and annotations must contain {split}")
        if self.synth_questions_per_image < 1 or not 0 <= self.synth_noise < 0.7:
            raise ValueError("synth_questions_per_image must be >= 1 and synth_noise in [0, 0.7)")


REFCOCO_BOXES = ("gt", "detected", "detected+gt")


@dataclass
class RefCOCOOptions:
    root: str = ""
    """Directory with refcoco+/refs(unc).p and instances.json (and the region features); empty: the synthetic
    RefCOCO+ generated from the synthetic world. File options below are relative to it, or absolute."""

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

    tokenizer: str = "tokenizer"
    """Directory with the WordPiece vocab.txt of the pretrained model, relative to root or absolute (the synthetic
    RefCOCO+ carries a copy of its world's)."""

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

    synth: SynthConfig = field(default_factory=SynthConfig)
    """The synthetic world the synthetic RefCOCO+ is drawn in (root empty): the pretraining run's world, so that the
    tokenizer and the region extractor are those the model was pretrained with."""

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
    """Precomputed mode: feature shards (relative to root, or absolute) keyed by img_fn, one row per metadata box in
    the metadata's order (e.g. `vlbert-fast extract-features` on a boxes .jsonl with "image_id" = img_fn)."""

    tokenizer: str = "tokenizer"
    """Directory with the WordPiece vocab.txt of the pretrained model, relative to root or absolute."""

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

    synth: SynthConfig = field(default_factory=SynthConfig)
    """The synthetic world the synthetic VCR's scenes, features and tokenizer come from (root empty): the
    pretraining run's world, so that the model reads the features and words it was pretrained on."""

    synth_max_objects: int = 2
    """Synthetic VCR: objects per image, 2..synth_max_objects (at most 4, one per shape). 2, as the pretraining
    world's images: more objects to tell apart take the tiny model many more steps."""

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
