"""Fixtures in VCR 1.0's exact layout: annotation lines as the dataset ships them (with the fields we do not read
too), per-image metadata JSON, PNG images and feature shards keyed by img_fn; a small WordPiece vocabulary."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlbert_fast.config import ModelConfig
from vlbert_fast.config.finetune_run import FinetuneConfig
from vlbert_fast.config.tasks import VCROptions
from vlbert_fast.data.formats import RegionRecord, convert_to_shards
from vlbert_fast.tasks.vcr import VCRTask
from vlbert_fast.tokenization import Tokenizer

WORDS = (
    "why is are smiling ? because and chair the was told a joke sitting on happy sad tired bored at looking "
    "casey riley jessie person dog he she it they what colour red blue"
).split()
FEATURE_DIM = 6


def line(annot_id, objects, question, answers, rationales, a_label=None, r_label=None, img="m1/img0"):
    """A VCR annotation line with the dataset's full set of fields."""
    out = {
        "movie": "m1",
        "objects": objects,
        "interesting_scores": [0],
        "answer_likelihood": "likely",
        "img_fn": f"{img}.png",
        "metadata_fn": f"{img}.json",
        "answer_orig": "x",
        "question_orig": "x",
        "rationale_orig": "x",
        "question": question,
        "answer_match_iter": [2, 3, 0],
        "answer_sources": [1, 2, 3, 4],
        "answer_choices": answers,
        "rationale_choices": rationales,
        "rationale_sources": [1, 2, 3, 4],
        "rationale_match_iter": [1, 2, 3],
        "img_id": img,
        "question_number": 0,
        "annot_id": annot_id,
        "match_fold": "val-0",
        "match_index": 0,
    }
    if a_label is not None:
        out["answer_label"], out["rationale_label"] = a_label, r_label
    return out


OBJECTS = ["person", "chair", "person"]
BOXES = [[10.0, 12.0, 29.0, 41.0, 0.99], [40.0, 30.0, 59.0, 49.0, 0.9], [2.0, 2.0, 9.0, 9.0, 0.8]]
SEGMS = [[[[10, 12], [30, 12], [30, 42], [10, 42]]], [[[40, 30], [60, 30], [40, 50]]], [[[2, 2], [6, 2], [6, 10]]]]
RECORDS = [
    line(
        "val-0",
        OBJECTS,
        ["why", "is", [0], "smiling", "?"],
        [["because", [2], "told", "a", "joke"], [[0], "is", "happy"], [[0, 2], "is", "sad"], [[1], "is", "red"]],
        [["they", "are", "happy"], [[0], "is", "smiling"], ["he", "is", "tired"], [[1], "is", "blue"]],
        a_label=1,
        r_label=1,
    ),
    line(
        "val-1",
        OBJECTS,
        ["what", "is", [1], "?"],
        [["a", "chair"], ["a", "dog"], ["a", "person"], ["it", "is", "red"]],
        [["it", "is", [1]], ["the", "chair"], [[0], "is", "sitting", "on", [1]], ["it", "is", "blue"]],
        a_label=0,
        r_label=2,
    ),
]


def write_root(root: Path, records=RECORDS, test_records=None) -> Path:
    (root / "vcr1images" / "m1").mkdir(parents=True, exist_ok=True)
    meta = {"boxes": BOXES, "segms": SEGMS, "width": 64, "height": 56, "names": OBJECTS}
    (root / "vcr1images" / "m1" / "img0.json").write_text(json.dumps(meta))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (56, 64, 3), dtype=np.uint8)).save(root / "vcr1images" / "m1" / "img0.png")
    for name, recs in (("train", records), ("val", records)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    if test_records is None:
        test_records = [{k: v for k, v in r.items() if not k.endswith("_label")} for r in records]
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test_records))
    boxes = np.asarray([b[:4] for b in BOXES], dtype=np.float32)
    features = np.arange(len(BOXES) * FEATURE_DIM, dtype=np.float32).reshape(len(BOXES), FEATURE_DIM)
    record = RegionRecord("m1/img0.png", 64, 56, boxes, features, None, None)
    convert_to_shards([record], root / "features", dtype="float32", max_boxes=8)
    return root


def make_task(root, tokenizer, model: ModelConfig, **options) -> VCRTask:
    """The task on the fixture files, built as the fine-tuning loop builds it (from a FinetuneConfig)."""
    model = dataclasses.replace(model, vocab_size=tokenizer.vocab_size)
    vcr = VCROptions(root=str(root), tokenizer=str(tokenizer.path), **options)
    return VCRTask(FinetuneConfig(task="vcr", model=model, vcr=vcr))


@pytest.fixture
def vcr_root(tmp_path) -> Path:
    return write_root(tmp_path / "vcr")


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory) -> Tokenizer:
    directory = tmp_path_factory.mktemp("vocab")
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    (directory / "vocab.txt").write_text("\n".join(special + WORDS + ["##s"]) + "\n")
    return Tokenizer(directory)
