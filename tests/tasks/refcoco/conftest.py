"""Small RefCOCO+ fixtures in the refer toolkit's exact formats: a refs pickle, instances.json, detections and
feature shards, over two images of 100 x 80 pixels."""

import pickle

import numpy as np
import pytest

from vlbert_fast.config import ModelConfig
from vlbert_fast.config.finetune_run import FinetuneConfig
from vlbert_fast.config.tasks import RefCOCOOptions
from vlbert_fast.data.formats import RegionRecord, convert_to_shards
from vlbert_fast.tasks.refcoco import RefCOCOTask
from vlbert_fast.tasks.refcoco.refer import write_json
from vlbert_fast.tokenization import Tokenizer

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "red", "man", "left", "dog", "on", "blue", "car"]
FEATURE_DIM = 6


def ref(ref_id, ann_id, image_id, split, *sentences, sent_id=0):
    sents = [
        {"tokens": s.split(), "raw": s.capitalize(), "sent": s, "sent_id": sent_id + k} for k, s in enumerate(sentences)
    ]
    return {
        "ref_id": ref_id,
        "ann_id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "split": split,
        "sentences": sents,
        "sent_ids": [s["sent_id"] for s in sents],
        "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg",
    }


REFS = [
    ref(0, 101, 1, "train", "the red man", "man on the left", sent_id=0),
    ref(1, 102, 1, "val", "the dog", sent_id=2),
    ref(2, 201, 2, "testA", "the blue car", sent_id=3),
    ref(3, 202, 2, "testB", "the car on the left", sent_id=4),
]
IMAGES = [
    {"id": 1, "width": 100, "height": 80, "file_name": "COCO_train2014_000000000001.jpg"},
    {"id": 2, "width": 100, "height": 80, "file_name": "COCO_train2014_000000000002.jpg"},
]


def ann(ann_id, image_id, bbox):
    return {
        "id": ann_id,
        "image_id": image_id,
        "bbox": bbox,
        "category_id": 1,
        "area": bbox[2] * bbox[3],
        "iscrowd": 0,
        "segmentation": [[bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1], bbox[0], bbox[1] + bbox[3]]],
    }


ANNOTATIONS = [
    ann(101, 1, [10, 10, 20, 40]),  # xyxy (10, 10, 30, 50)
    ann(102, 1, [60, 30, 50, 50]),  # (60, 30, 110, 80): beyond the right and bottom border, clipped to (99, 79)
    ann(201, 2, [0, 0, 40, 40]),
    ann(202, 2, [50, 40, 30, 30]),
]
# The original's layout: records with a COCO box; image 1: the man slightly off, a spurious box
DETECTIONS = [
    {"image_id": 1, "box": [12, 10, 20, 40], "score": 0.9},
    {"image_id": 1, "box": [70, 0, 10, 10], "score": 0.5},
    {"image_id": 2, "box": [0, 0, 38, 40], "score": 0.8},
]


def feature_rows(boxes):
    """A recognisable feature per box: its coordinates and their sum, so tests can tell which row was taken."""
    boxes = np.asarray(boxes, dtype=np.float32)
    return np.concatenate([boxes, boxes.sum(1, keepdims=True), np.ones((len(boxes), 1), np.float32)], 1)


def write_dataset(root, refs=REFS, images=IMAGES, annotations=ANNOTATIONS, detections=DETECTIONS):
    (root / "refcoco+" / "proposal").mkdir(parents=True)
    (root / "refcoco+" / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    write_json(
        root / "refcoco+" / "instances.json",
        {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]},
    )
    write_json(root / "refcoco+" / "proposal" / "res101_coco_minus_refer_notime_dets.json", detections)
    records = []
    for image in images:
        gt = [
            [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
            for a in annotations
            if a["image_id"] == image["id"]
        ]
        det = [
            [d["box"][0], d["box"][1], d["box"][0] + d["box"][2], d["box"][1] + d["box"][3]]
            for d in detections
            if d["image_id"] == image["id"]
        ]
        boxes = np.asarray((det + gt)[::-1], dtype=np.float32)  # stored in another order than the RoIs are asked
        records.append(RegionRecord(str(image["id"]), image["width"], image["height"], boxes, feature_rows(boxes)))
    convert_to_shards(records, root / "features", dtype="float32")
    return root


@pytest.fixture
def dataset_root(tmp_path):
    return write_dataset(tmp_path / "refcoco_root")


@pytest.fixture
def tokenizer_dir(tmp_path):
    directory = tmp_path / "tok"
    directory.mkdir()
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return directory


@pytest.fixture
def tokenizer(tokenizer_dir):
    return Tokenizer(tokenizer_dir)


@pytest.fixture
def make_task(dataset_root, tokenizer_dir):
    def make(**options):
        model = ModelConfig(
            vocab_size=len(VOCAB),
            hidden_size=8,
            num_attention_heads=2,
            intermediate_size=16,
            visual_feature_dim=FEATURE_DIM,
        )
        cfg = FinetuneConfig(
            task="refcoco",
            model=model,
            refcoco=RefCOCOOptions(root=str(dataset_root), tokenizer=str(tokenizer_dir), **options),
        )
        return RefCOCOTask(cfg)

    return make
