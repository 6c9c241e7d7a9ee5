"""Conceptual Captions JSON Lines as the original ships them; malformed lines name file, record and line."""

import json

import pytest

from vlbert_fast.data.formats import CaptionRecord, FormatError, SkipCounter, read_cc_jsonl, write_cc_jsonl

ORIGINAL_LINES = [
    {"image": "train_image.zip@/00001.jpg", "caption": ["a", "red", "circle"], "frcnn": "train_frcnn.0.zip@/1.json"},
    {"image": "train_image.zip@/00002.jpg", "caption": ["two", "dogs"], "frcnn": "train_frcnn.1.zip@/2.json"},
]


def test_original_lines_read_back(tmp_path):
    path = tmp_path / "train_frcnn.json"
    path.write_text("".join(json.dumps(o) + "\n" for o in ORIGINAL_LINES))
    got = read_cc_jsonl(path)
    assert got == [CaptionRecord(o["image"], o["caption"], o["frcnn"]) for o in ORIGINAL_LINES]
    assert got[0].feature_key == "train_frcnn.0.zip@/1.json"


def test_string_captions_missing_frcnn_blank_lines_and_extra_keys(tmp_path):
    lines = [
        '{"image": "a.jpg", "caption": "  a  small\\tcat ", "width": 640}',
        "",
        '{"image": "b.jpg", "caption": ["x"], "frcnn": null}',
    ]
    (tmp_path / "u.jsonl").write_text("\n".join(lines) + "\n")
    assert read_cc_jsonl(tmp_path / "u.jsonl") == [
        CaptionRecord("a.jpg", ["a", "small", "cat"], None),
        CaptionRecord("b.jpg", ["x"], None),
    ]


def test_write_then_read_round_trips_unicode(tmp_path):
    records = [CaptionRecord("é.jpg", ["café", "über"], "f.zip@/é.json"), CaptionRecord("b.jpg", ["b"], None)]
    assert write_cc_jsonl(tmp_path / "w.jsonl", records) == 2
    assert read_cc_jsonl(tmp_path / "w.jsonl") == records
    with pytest.raises(FormatError, match="field 'caption': expected at least one word"):
        write_cc_jsonl(tmp_path / "bad.jsonl", [CaptionRecord("a.jpg", [], None)])


BAD_LINES = [
    ('{"image": "x.jpg", "caption": ["a"', "record 1 (line 2): invalid JSON: Expecting"),
    ('{"caption": ["a"]}', "record 2 (line 3), field 'image': missing"),
    ('{"image": "x.jpg"}', "record 3 (line 4), field 'caption': missing"),
    ('{"image": "x.jpg", "caption": [1, 2]}', "record 4 (line 5), field 'caption': expected a list of strings or"),
    ('{"image": "x.jpg", "caption": "a", "frcnn": 5}', "record 5 (line 6), field 'frcnn': expected a non-empty"),
    ('["image", "caption"]', "record 6 (line 7): expected a JSON object, found list"),
    ('{"image": "x.jpg", "caption": "   "}', "record 7 (line 8), field 'caption': expected at least one word"),
]


def test_each_malformed_line_raises_or_is_skipped_and_counted(tmp_path):
    good = [json.dumps(o) for o in ORIGINAL_LINES]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([good[0], *[b for b, _ in BAD_LINES], good[1]]) + "\n")
    with pytest.raises(FormatError) as info:
        read_cc_jsonl(path)
    assert str(info.value).startswith(f"{path}, {BAD_LINES[0][1]}")
    counter = SkipCounter("skip", max_examples=len(BAD_LINES))
    got = read_cc_jsonl(path, counter)
    assert [r.image for r in got] == [o["image"] for o in ORIGINAL_LINES]
    assert counter.total == len(BAD_LINES)
    for message, (_, want) in zip(counter.examples, BAD_LINES, strict=True):
        assert message.startswith(f"{path}, {want}"), message
    assert counter.by_reason()[(str(path), "invalid JSON")] == 1


def test_invalid_utf8_line_is_an_error_with_its_line(tmp_path):
    path = tmp_path / "u8.jsonl"
    path.write_bytes(json.dumps(ORIGINAL_LINES[0]).encode() + b'\n{"image": "\xff.jpg", "caption": "a"}\n')
    with pytest.raises(FormatError, match=r"u8.jsonl, record 1 \(line 2\): invalid JSON"):
        read_cc_jsonl(path)
