"""The original's per-image region JSON: hand-written files read back exactly; malformed ones name the field."""

import base64
import json
import re

import numpy as np
import pytest

from vlbert_fast.data.formats import (
    FormatError,
    RegionRecord,
    decode_array,
    encode_array,
    read_region_json,
    validate,
    write_region_json,
)

from .helpers import assert_same, b64, make_record, region_json_bytes, region_json_dict


@pytest.mark.parametrize("num", [0, 1, 7])
def test_hand_written_file_reads_exactly(tmp_path, num):
    want = make_record(np.random.default_rng(num), "cc_000123", num, dim=11, classes=1601 if num == 1 else 5)
    path = tmp_path / "r.json"
    path.write_bytes(region_json_bytes(want))
    got = read_region_json(path)
    if num == 0:  # no rows: the feature width cannot be known from an empty array
        assert got.features.shape == (0, 0) and got.boxes.shape == (0, 4)
    else:
        assert_same(got, want)
    assert_same(read_region_json(path.read_bytes(), source="zip@/r.json"), got)
    got.features[:1] = 1.0  # writable: the loader may reorder or mask rows in place


def test_mime_style_base64_with_line_breaks_is_accepted_like_decodebytes(tmp_path):
    want = make_record(np.random.default_rng(1), "7", 9, dim=20)
    obj = region_json_dict(want)
    obj["features"] = base64.encodebytes(want.features.astype("<f4").tobytes()).decode()  # lines of 76 + "\n"
    assert "\n" in obj["features"]
    obj["image_id"] = 7  # integer ids (COCO) become strings
    assert_same(read_region_json(json.dumps(obj).encode()), want)


def test_write_then_read_round_trips_with_image_box_feature(tmp_path):
    want = make_record(np.random.default_rng(2), "a/b.jpg", 4, dim=6)
    want.image_box_feature = np.arange(6, dtype=np.float32)
    write_region_json(tmp_path / "x.json", want)
    assert_same(read_region_json(tmp_path / "x.json"), want)
    assert json.loads((tmp_path / "x.json").read_text())["boxes"] == b64(want.boxes)


def test_decode_array_reports_wrong_byte_count_and_bad_base64():
    with pytest.raises(FormatError) as info:
        decode_array(base64.b64encode(b"\0" * 142).decode(), (9, 4), source="data/cc.jsonl", record=17, field="boxes")
    assert str(info.value) == (
        "data/cc.jsonl, record 17, field 'boxes': expected 36 float32 values (9 x 4), found 35.5 (142 decoded bytes)"
    )
    with pytest.raises(FormatError, match=r"field 'features': expected base64 text, found character '\*'"):
        decode_array("AAAA*AAA", (1, -1), source="f", record="x", field="features")
    with pytest.raises(FormatError, match="expected a multiple of 3 float32 values"):
        decode_array(encode_array(np.zeros(7)), (3, -1), source="f", record="x", field="features")
    assert decode_array(encode_array(np.arange(6)), (3, -1), source="f", record="x", field="f").shape == (3, 2)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_boxes": 4}, "field 'boxes': expected 16 float32 values (4 x 4), found 12"),
        ({"features": "not base64!"}, "field 'features': expected base64 text"),
        ({"image_w": 0}, "field 'image_w': expected an integer >= 1, found 0"),
        ({"image_h": "480"}, "field 'image_h': expected an integer >= 1, found '480'"),
        ({"boxes": None}, "field 'boxes': expected a base64 string, found NoneType"),
        ({"classes": b64(np.zeros((2, 5)))}, "field 'classes': expected a multiple of 3 float32 values"),
    ],
)
def test_malformed_fields_name_file_record_and_field(tmp_path, change, message):
    obj = region_json_dict(make_record(np.random.default_rng(3), "img9", 3))
    obj.update(change)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(FormatError, match=re.escape("bad.json, record 'img9', " + message)):
        read_region_json(path)


def test_missing_field_invalid_json_and_missing_file(tmp_path):
    obj = region_json_dict(make_record(np.random.default_rng(4), "img1", 2))
    del obj["features"]
    with pytest.raises(FormatError, match=r"m.json, record 'img1', field 'features': missing"):
        read_region_json(json.dumps(obj).encode(), source="m.json")
    with pytest.raises(FormatError, match=r"cut.json: invalid JSON"):
        read_region_json(json.dumps(obj).encode()[:-10], source="cut.json")
    with pytest.raises(FormatError, match=r"nope.json: cannot read"):
        read_region_json(tmp_path / "nope.json")


def test_validate_rejects_each_inconsistency():
    rng = np.random.default_rng(5)
    good = make_record(rng, "g", 3, dim=4, classes=2)
    validate("src", good)
    cases = {
        "features": (dict(features=np.zeros((2, 4), np.float32)), "expected 3 rows (one per box), found 2 rows"),
        "boxes": (dict(boxes=np.zeros((3, 5), np.float32)), "expected 4 values per box"),
        "classes": (dict(classes=np.zeros((4, 2), np.float32)), "expected 3 rows (one per box), found 4 rows"),
        "image_box_feature": (dict(image_box_feature=np.zeros(5, np.float32)), "expected 4 values"),
        "image_w": (dict(image_w=-3), "expected a positive integer, found -3"),
    }
    for field, (change, message) in cases.items():
        with pytest.raises(FormatError, match=re.escape(f"src, record 'g', field '{field}': {message}")):
            validate("src", RegionRecord(**{**good.__dict__, **change}))
    nan = good.features.copy()
    nan[1, 2] = np.nan
    with pytest.raises(FormatError, match=r"field 'features': expected finite values, found nan at index \(1, 2\)"):
        validate("src", RegionRecord(**{**good.__dict__, "features": nan}))
    flipped = good.boxes.copy()
    flipped[2, [0, 2]] = flipped[2, [2, 0]]
    with pytest.raises(FormatError, match=r"field 'boxes': expected x2 >= x1 and y2 >= y1, found box 2"):
        validate("src", RegionRecord(**{**good.__dict__, "boxes": flipped}))
    outside = good.boxes + 1000.0  # partly or wholly outside the image: allowed, the loader clips
    validate("src", RegionRecord(**{**good.__dict__, "boxes": outside}))
