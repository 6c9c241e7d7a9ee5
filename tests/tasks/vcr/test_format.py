"""The readers on files in VCR 1.0's exact format, and malformed records: errors name the file, line and field."""

import json

import pytest

from vlbert_fast.data.formats import FormatError
from vlbert_fast.tasks.vcr import read_metadata, read_vcr_jsonl

from .conftest import BOXES, OBJECTS, RECORDS, SEGMS


def test_reads_the_annotations(vcr_root):
    records = read_vcr_jsonl(vcr_root / "val.jsonl")
    assert [r.annot_id for r in records] == ["val-0", "val-1"]
    first = records[0]
    assert first.objects == OBJECTS
    assert first.question == ["why", "is", [0], "smiling", "?"]
    assert first.answer_choices[2] == [[0, 2], "is", "sad"]
    assert (first.answer_label, first.rationale_label) == (1, 1)
    assert (first.img_fn, first.metadata_fn) == ("m1/img0.png", "m1/img0.json")
    assert first.extra == {"movie": "m1", "img_id": "m1/img0", "question_number": 0}
    assert first.source.endswith("val.jsonl, line 1")


def test_test_split_has_no_labels(vcr_root):
    records = read_vcr_jsonl(vcr_root / "test.jsonl", labelled=False)
    assert all(r.answer_label is None and r.rationale_label is None for r in records)
    with pytest.raises(FormatError, match=r"test.jsonl, line 1, field 'answer_label'.*labelled=False"):
        read_vcr_jsonl(vcr_root / "test.jsonl")


def test_reads_the_metadata():
    meta = read_metadata(json.dumps({"boxes": BOXES, "segms": SEGMS, "width": 64, "height": 56}).encode(), "m.json")
    assert meta.boxes[1] == [40.0, 30.0, 59.0, 49.0]  # the score is dropped
    assert (meta.width, meta.height, meta.names) == (64, 56, [])
    assert meta.segms[1] == SEGMS[1]


def bad_line(tmp_path, **changes):
    record = {**RECORDS[0], **changes}
    for key, value in changes.items():
        if value is None:
            del record[key]
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(RECORDS[1]) + "\n" + json.dumps(record) + "\n")
    return path


@pytest.mark.parametrize(
    "changes, field, expected",
    [
        ({"question": ["why", [3]]}, "question", r"object indices in \[0, 3\)"),
        ({"question": ["why", [-1]]}, "question", r"object indices"),
        ({"question": ["why", []]}, "question", r"non-empty list of object indices"),
        ({"question": []}, "question", r"non-empty list of tokens"),
        ({"answer_choices": RECORDS[0]["answer_choices"][:3]}, "answer_choices", "a list of 4 token lists"),
        ({"rationale_choices": [["a"], ["b"], ["c"], [7]]}, r"rationale_choices\[3\]", "a word or"),
        ({"answer_label": 4}, "answer_label", r"an integer in \[0, 4\)"),
        ({"rationale_label": "1"}, "rationale_label", r"an integer in \[0, 4\)"),
        ({"objects": ["person", 3]}, "objects", "a list of class names"),
        ({"img_fn": None}, "img_fn", "a non-empty string"),
        ({"annot_id": ""}, "annot_id", "a non-empty string"),
        ({"annot_id": "val-1"}, "annot_id", r"ids unique in the file.*first on line 1"),
    ],
)
def test_malformed_records_name_file_line_and_field(tmp_path, changes, field, expected):
    with pytest.raises(FormatError, match=rf"bad.jsonl, line 2, field '{field}'.*{expected}"):
        read_vcr_jsonl(bad_line(tmp_path, **changes))


def test_invalid_json_and_empty_files(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n{not json\n")
    with pytest.raises(FormatError, match=r"broken.jsonl, line 2: invalid JSON"):
        read_vcr_jsonl(path)
    path.write_text("\n")
    with pytest.raises(FormatError, match="no records"):
        read_vcr_jsonl(path)
    with pytest.raises(FormatError, match="cannot read"):
        read_vcr_jsonl(tmp_path / "missing.jsonl")


@pytest.mark.parametrize(
    "changes, field, expected",
    [
        ({"width": 0}, "width", "a positive integer"),
        ({"boxes": [[1, 2, 3]]}, "boxes", r"box 0 as \[x1, y1, x2, y2, score\]"),
        ({"boxes": [[5, 2, 3, 9, 1.0]], "segms": [[]]}, "boxes", "x2 >= x1 and y2 >= y1 in box 0"),
        ({"segms": SEGMS[:2]}, "segms", "a list of 3 polygon lists"),
        ({"segms": [SEGMS[0], [[[1, 2, 3]]], SEGMS[2]]}, "segms", r"object 1, polygon 0: a list of \[x, y\] points"),
        ({"names": ["person"]}, "names", "a list of 3 class names"),
    ],
)
def test_malformed_metadata_names_file_and_field(changes, field, expected):
    meta = {"boxes": BOXES, "segms": SEGMS, "width": 64, "height": 56, **changes}
    with pytest.raises(FormatError, match=rf"img.json, field '{field}': expected {expected}"):
        read_metadata(json.dumps(meta).encode(), "img.json")
    with pytest.raises(FormatError, match="img.json: invalid JSON"):
        read_metadata(b"{", "img.json")
