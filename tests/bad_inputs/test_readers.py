"""Bad-input matrix, the pretraining readers: region JSON, bottom-up TSV, Conceptual Captions JSON Lines, the text
corpus, the vocabulary, and what the pretraining dataset reads per record (images end to end, regions with
precomputed features). matrix.py says what each case asserts."""

from __future__ import annotations

import base64
import gzip
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlbert_fast.config import DataConfig, VisualConfig
from vlbert_fast.data.caption_dataset import CaptionDataset, RegionSource, Skipped
from vlbert_fast.data.formats import SkipCounter, iter_bua_tsv, iter_cc_jsonl, iter_text_corpus, read_cc_jsonl
from vlbert_fast.data.formats.region_inputs import iter_region_input
from vlbert_fast.tokenization import Tokenizer, TokenizerError

from .matrix import Case, check_skip, check_strict, skip_params, strict_params


def b64(array) -> str:
    return base64.b64encode(np.asarray(array, dtype="<f4").tobytes()).decode("ascii")


GOOD_BOXES = [[1, 2, 20, 30], [5, 5, 40, 40]]
GOOD_FEATURES = np.arange(16, dtype=np.float32).reshape(2, 8)


def region(image_id="img", **changes) -> dict:
    obj = {
        "image_id": image_id,
        "image_w": 64,
        "image_h": 48,
        "num_boxes": 2,
        "boxes": b64(GOOD_BOXES),
        "features": b64(GOOD_FEATURES),
        "classes": b64(np.full((2, 3), 1 / 3)),
    }
    obj.update(changes)
    return {k: v for k, v in obj.items() if v is not None}


# ----------------------------------------------------------------------------------------------------------------------
# region JSON: a folder of per-image files (as convert-features reads one); the bad one between two good ones


def region_case(id_: str, content, expect: list[str]) -> Case:
    def make(tmp: Path, world: Path) -> Path:
        folder = tmp / "regions"
        folder.mkdir()
        (folder / "a_good.json").write_text(json.dumps(region("a")))
        (folder / "c_good.json").write_text(json.dumps(region("c")))
        bad = folder / "b_bad.json"
        bad.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
        return bad

    def read(path: Path, counter: SkipCounter | None) -> list:
        stats = {"captions_without_frcnn": 0}
        return [r for _, r in iter_region_input(path.parent, None, counter or SkipCounter("raise"), stats)]

    return Case(f"region_json-{id_}", make, read, expect)


REGION_JSON = [
    region_case("invalid_json", b'{"image_id": "b", ', ["invalid JSON"]),
    region_case("not_an_object", [1, 2], ["expected a JSON object, found list"]),
    region_case("empty_image_id", region(""), ["field 'image_id'", "expected a non-empty string or an integer"]),
    region_case("missing_image_w", region("b", image_w=None), ["record 'b'", "field 'image_w'", "missing"]),
    region_case("zero_image_h", region("b", image_h=0), ["field 'image_h'", "expected an integer >= 1, found 0"]),
    region_case("fractional_width", region("b", image_w=12.5), ["field 'image_w'", "found 12.5"]),
    region_case("negative_num_boxes", region("b", num_boxes=-1), ["field 'num_boxes'", "an integer >= 0, found -1"]),
    region_case("missing_features", region("b", features=None), ["field 'features'", "missing"]),
    region_case("bad_base64", region("b", boxes="AA!A"), ["field 'boxes'", "expected base64 text", "'!'"]),
    region_case(
        "box_bytes_short",
        region("b", boxes=b64([[1, 2, 3]])),
        ["field 'boxes'", "expected 8 float32 values", "found 3"],
    ),
    region_case(
        "feature_rows", region("b", features=b64(np.zeros(7))), ["field 'features'", "a multiple of 2 float32 values"]
    ),
    region_case("classes_rows", region("b", classes=b64(np.zeros(3))), ["field 'classes'", "a multiple of 2"]),
    region_case(
        "nan_feature",
        region("b", features=b64(np.where(np.eye(2, 8) > 0, np.nan, 1.0))),
        ["field 'features'", "expected finite values", "found nan at index (0, 0)"],
    ),
    region_case(
        "inf_box",
        region("b", boxes=b64([[1, 2, np.inf, 30], [5, 5, 40, 40]])),
        ["field 'boxes'", "expected finite values", "found inf"],
    ),
    region_case(
        "reversed_box",
        region("b", boxes=b64([[20, 2, 1, 30], [5, 5, 40, 40]])),
        ["field 'boxes'", "expected x2 >= x1 and y2 >= y1", "box 0 = [20.0, 2.0, 1.0, 30.0]"],
    ),
    region_case(
        "whole_image_feature_width",
        region("b", image_box_feature=b64(np.zeros(5))),
        ["field 'image_box_feature'", "expected 8 values (the feature width), found 5"],
    ),
]


# ----------------------------------------------------------------------------------------------------------------------
# bottom-up TSV: good line, bad line, good line


def tsv_fields(image_id="img", w="64", h="48", n="2", boxes=None, features=None) -> list[str]:
    return [image_id, w, h, n, boxes or b64(GOOD_BOXES), features or b64(GOOD_FEATURES)]


def tsv_case(id_: str, bad_line: bytes | list[str], expect: list[str]) -> Case:
    def make(tmp: Path, world: Path) -> Path:
        bad = bad_line if isinstance(bad_line, bytes) else "\t".join(bad_line).encode()
        lines = ["\t".join(tsv_fields("a")).encode(), bad, "\t".join(tsv_fields("c")).encode()]
        path = tmp / "features.tsv"
        path.write_bytes(b"\r\n".join(lines) + b"\r\n")
        return path

    return Case(f"tsv-{id_}", make, lambda path, counter: list(iter_bua_tsv(path, counter)), expect)


TSV = [
    tsv_case("five_fields", tsv_fields("b")[:5], ["record 1 (line 2)", "expected 6 tab-separated fields", "found 5"]),
    tsv_case("seven_fields", [*tsv_fields("b"), b64(np.zeros((2, 3)))], ["line 2", "expected 6 tab-separated"]),
    tsv_case("width_not_int", tsv_fields("b", w="abc"), ["record 'b' (line 2)", "field 'image_w'", "found 'abc'"]),
    tsv_case("num_boxes_mismatch", tsv_fields("b", n="3"), ["field 'boxes'", "expected 12 float32 values", "found 8"]),
    tsv_case("bad_base64", tsv_fields("b", features="%%%%"), ["field 'features'", "expected base64 text"]),
    tsv_case(
        "bytes_repr",
        tsv_fields("b", boxes="b'AAAA'"),
        ["field 'boxes'", "found Python's bytes repr b'...' instead of base64 text"],
    ),
    tsv_case(
        "nan_feature",
        tsv_fields("b", features=b64(np.full((2, 8), np.nan))),
        ["record 'b' (line 2)", "field 'features'", "expected finite values, found nan"],
    ),
    tsv_case("reversed_box", tsv_fields("b", boxes=b64([[1, 30, 20, 2], [5, 5, 40, 40]])), ["x2 >= x1 and y2 >= y1"]),
    tsv_case("non_utf8", b"b\xff\t64\t48\t0\t\t", ["record 1 (line 2)", "invalid UTF-8"]),
    tsv_case("empty_id", tsv_fields(""), ["record 1 (line 2)", "field 'image_id'", "expected a non-empty id"]),
]


# ----------------------------------------------------------------------------------------------------------------------
# Conceptual Captions JSON Lines: good record, bad record, good record


def caption(image="images.zip@/000001.png", caption="a red circle", frcnn="frcnn.zip@/000001.json") -> dict:
    return {"image": image, "caption": caption, "frcnn": frcnn}


def cc_case(id_: str, bad: object, expect: list[str]) -> Case:
    def make(tmp: Path, world: Path) -> Path:
        raw = bad if isinstance(bad, bytes) else json.dumps(bad).encode()
        path = tmp / "train_frcnn.json"
        path.write_bytes(b"\n".join([json.dumps(caption()).encode(), raw, json.dumps(caption()).encode()]) + b"\n")
        return path

    return Case(f"cc_jsonl-{id_}", make, lambda path, counter: list(iter_cc_jsonl(path, counter)), expect)


CC_JSONL = [
    cc_case("invalid_json", b'{"image": "x.png", "caption": ', ["record 1 (line 2)", "invalid JSON"]),
    cc_case("not_an_object", [1, 2], ["record 1 (line 2)", "expected a JSON object, found list"]),
    cc_case("missing_image", {"caption": "a b"}, ["record 1 (line 2)", "field 'image'", "missing"]),
    cc_case("image_not_string", caption(image=7), ["field 'image'", "expected a non-empty path string, found 7"]),
    cc_case("missing_caption", {"image": "x.png"}, ["field 'caption'", "missing"]),
    cc_case("empty_caption", caption(caption=[]), ["field 'caption'", "expected at least one word"]),
    cc_case("caption_not_words", caption(caption=["a", 3]), ["field 'caption'", "a list of strings or a string"]),
    cc_case("empty_frcnn", caption(frcnn=""), ["field 'frcnn'", "a non-empty path string or null, found ''"]),
    cc_case("non_utf8", b'{"image": "\xff.png", "caption": "a"}', ["record 1 (line 2)", "invalid JSON"]),
]


# ----------------------------------------------------------------------------------------------------------------------
# the text corpus: good line, bad line, good line


def corpus_non_utf8(tmp: Path, world: Path) -> Path:
    path = tmp / "corpus.txt"
    path.write_bytes(b"first good line\nbad \xff\xfe line\nlast good line\n")
    return path


def corpus_damaged_gzip(tmp: Path, world: Path) -> Path:
    path = tmp / "corpus.txt.gz"
    data = gzip.compress(b"first good line\nsecond good line\n" + b"more text " * 2000)
    path.write_bytes(data[: len(data) // 2])  # the rest of the stream is lost: counted once
    return path


TEXT_CORPUS = [
    Case(
        "text_corpus-non_utf8",
        corpus_non_utf8,
        lambda path, counter: list(iter_text_corpus(path, counter)),
        ["line 2", "expected UTF-8 text", "found byte b'\\xff' at offset 4"],
    ),
    Case(
        "text_corpus-damaged_gzip",
        corpus_damaged_gzip,
        lambda path, counter: list(iter_text_corpus(path, counter))[:2],
        ["damaged gzip stream, rest of the file unreadable"],
    ),
]


# ----------------------------------------------------------------------------------------------------------------------
# the vocabulary (all or nothing: no skip mode)


def vocab_case(id_: str, content: bytes | None, expect: list[str]) -> Case:
    def make(tmp: Path, world: Path) -> Path:
        folder = tmp / "tokenizer"
        folder.mkdir()
        if content is None:
            return folder
        (folder / "vocab.txt").write_bytes(content)
        return folder / "vocab.txt"

    def read(path: Path, counter) -> list:
        return [Tokenizer(path if path.is_dir() else path.parent)]

    return Case(f"vocab-{id_}", make, read, expect, error=TokenizerError, skip_good=None)


SPECIALS = b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n"
VOCAB = [
    vocab_case("missing", None, ["no vocab.txt"]),
    vocab_case("no_special_tokens", b"a\nb\nc\n", ["special tokens ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']"]),
    vocab_case("non_utf8", SPECIALS + b"red\nbl\xffue\n", ["line 7", "expected UTF-8 text", "found byte b'\\xff'"]),
]


# ----------------------------------------------------------------------------------------------------------------------
# what the pretraining dataset reads per record: a caption file whose record 1 is bad, in a copy of the small world


VISUAL = VisualConfig(mode="e2e", depth=18, width=4, short_side=64, long_side=64, normalization="torchvision")


def png(size=(64, 64)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def dataset_case(id_: str, files: dict, bad_record: dict, expect: list[str], e2e: bool, feature_dim=None) -> Case:
    def make(tmp: Path, world: Path) -> Path:
        root = tmp / "world"
        root.mkdir()
        shutil.copytree(world / "tokenizer", root / "tokenizer")
        for name in ("images.zip", "frcnn.zip"):
            shutil.copy(world / name, root / name)
        for name, content in files.items():
            (root / name).write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
        good = [json.loads(line) for line in (world / "cc_train.jsonl").read_text().splitlines()[:3]]
        good[1] = {**good[1], **bad_record}
        (root / "cc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good))
        return root / "cc.jsonl"

    def read(path: Path, counter: SkipCounter | None) -> list:
        cfg = DataConfig(
            root=str(path.parent), features="", num_workers=0, on_bad_record="skip" if counter else "raise"
        )
        ds = CaptionDataset(
            read_cc_jsonl(path),
            RegionSource(path.parent, ""),
            Tokenizer(path.parent / "tokenizer"),
            cfg,
            source=str(path),
            masking=False,
            feature_dim=feature_dim,
            num_classes=25,
            visual=VISUAL if e2e else None,
        )
        out = []
        for i in range(len(ds)):
            item = ds[i]
            if isinstance(item, Skipped):
                counter.handle(item.error)
            else:
                out.append(item)
        return out

    return Case(f"dataset-{id_}", make, read, ["record 1", *expect])


def region_file(**changes) -> dict:
    """A region JSON of a 64 x 64 image with the small world's 25 detector classes."""
    return region("x", **{"image_w": 64, "image_h": 64, "classes": b64(np.full((2, 25), 1 / 25)), **changes})


DATASET = [
    dataset_case(
        "e2e_truncated_image",
        {"bad.png": png()[:60], "x.json": region_file()},
        {"image": "bad.png", "frcnn": "x.json"},
        ["bad.png", "cannot decode the image"],
        e2e=True,
    ),
    dataset_case(
        "e2e_not_an_image",
        {"bad.png": b"just some text", "x.json": region_file()},
        {"image": "bad.png", "frcnn": "x.json"},
        ["bad.png", "cannot read the image"],
        e2e=True,
    ),
    dataset_case(
        "e2e_image_too_small",
        {"bad.png": png((8, 8)), "x.json": region_file(image_w=8, image_h=8, boxes=b64([[1, 1, 5, 5]] * 2))},
        {"image": "bad.png", "frcnn": "x.json"},
        ["image is 8 x 8, under the minimum of 10 px"],
        e2e=True,
    ),
    dataset_case(
        "e2e_box_outside_image",
        {"ok.png": png(), "x.json": region_file(boxes=b64([[70, 70, 90, 90], [1, 1, 5, 5]]))},
        {"image": "ok.png", "frcnn": "x.json"},
        ["box 0 = [70.0, 70.0, 90.0, 90.0] lies wholly outside the 64 x 64 image"],
        e2e=True,
    ),
    dataset_case(
        "e2e_regions_of_another_image",
        {"ok.png": png(), "x.json": region_file(image_w=640, image_h=100)},
        {"image": "ok.png", "frcnn": "x.json"},
        ["image is 64 x 64 (after EXIF orientation) but its regions were extracted on a 640 x 100 image"],
        e2e=True,
    ),
    dataset_case(
        "precomputed_box_outside_image",
        {"x.json": region_file(boxes=b64([[1, 1, 5, 5], [10, 80, 20, 90]]))},
        {"frcnn": "x.json"},
        ["box 1 = [10.0, 80.0, 20.0, 90.0] lies wholly outside the 64 x 64 image"],
        e2e=False,
    ),
    dataset_case(
        "precomputed_feature_width",
        {"x.json": region_file()},
        {"frcnn": "x.json"},
        ["region features are 8-d, model.visual_feature_dim is 128"],
        e2e=False,
        feature_dim=128,
    ),
    dataset_case(
        "precomputed_class_width",
        {"x.json": region_file(classes=b64(np.full((2, 7), 1 / 7)))},
        {"frcnn": "x.json"},
        ["soft labels have 7 classes, model.num_roi_classes is 25"],
        e2e=False,
    ),
    dataset_case(
        "precomputed_missing_member",
        {},
        {"frcnn": "frcnn.zip@/nope.json"},
        ["no member 'nope.json' in archive"],
        e2e=False,
    ),
    dataset_case(
        "precomputed_bad_region_file",
        {"x.json": region_file(num_boxes=3)},
        {"frcnn": "x.json"},
        ["x.json", "field 'boxes'", "expected 12 float32 values"],
        e2e=False,
    ),
]


# Feature shards (data/formats/shard_layout.py): cases (non-finite values, reversed or zero-area boxes, the image size,
# widths, truncated or index-mismatched shards, duplicate image ids) join this matrix with issue 20's validating
# reader; add them as a SHARDS list here and to CASES.
CASES = REGION_JSON + TSV + CC_JSONL + TEXT_CORPUS + VOCAB + DATASET


@pytest.mark.parametrize("case", strict_params(CASES))
def test_strict_mode_names_the_file_record_field_and_values(case, tmp_path, small_world):
    check_strict(case, tmp_path, small_world)


@pytest.mark.parametrize("case", skip_params(CASES))
def test_skip_mode_counts_the_bad_record_once_and_reads_the_rest(case, tmp_path, small_world):
    check_skip(case, tmp_path, small_world)
