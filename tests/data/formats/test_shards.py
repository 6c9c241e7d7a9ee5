"""Feature shards: what goes in comes out (float32 exactly, float16 within its rounding), boxes are stored back to
back (never padded), truncation is counted, an unfinished or damaged conversion is refused with an error naming the
file."""

import dataclasses
import json

import numpy as np
import pytest

from vlbert_fast.data.formats import FeatureShards, FormatError, ShardWriter, SkipCounter, convert_to_shards
from vlbert_fast.data.formats.shard_writer import directory_bytes

from .helpers import assert_same, make_record

# float16 rounds to nearest: relative error <= 2^-11 for normal values, absolute error <= 2^-25 for subnormal ones.
TOLERANCE = {"float32": (0.0, 0.0), "float16": (2.0**-25, 2.0**-11)}


def make_records(n: int, seed: int = 0, dim: int = 6, classes: int | None = 5, whole: bool = True):
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        record = make_record(rng, f"img{i}", [3, 0, 5, 1, 4, 2, 5][i % 7], dim=dim, classes=classes)
        if whole:
            record.image_box_feature = rng.normal(size=dim).astype(np.float32)
        records.append(record)
    return records


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip_over_several_shards(tmp_path, dtype):
    want = make_records(7)
    stats = convert_to_shards(want, tmp_path, max_boxes=5, dtype=dtype, shard_size=3)
    assert (stats["records"], stats["shards"], stats["truncated_records"], stats["skipped"]) == (7, 3, 0, 0)
    shards = FeatureShards(tmp_path)
    assert len(shards) == 7 and list(shards.image_ids) == [r.image_id for r in want]
    assert (shards.feature_dim, shards.num_classes, shards.max_boxes, shards.dtype) == (6, 5, 5, dtype)
    atol, rtol = TOLERANCE[dtype]
    for record in reversed(want):
        assert record.image_id in shards
        assert_same(shards[record.image_id], record, atol=atol, rtol=rtol)
    assert_same(shards.record_at(-1), want[-1], atol=atol, rtol=rtol)
    index = json.loads((tmp_path / "index.json").read_text())
    assert (index["version"], index["num_shards"], index["shard_size"], index["dtype"]) == (2, 3, 3, dtype)
    # ragged: shard 0 holds img0..img2 with 3 + 0 + 5 boxes, back to back, and nothing else
    features = np.load(tmp_path / "shard-00000.features.npy")
    assert features.shape == (8, 6) and features.dtype == np.dtype(dtype)
    np.testing.assert_allclose(features[3:], want[2].features, atol=atol, rtol=rtol)
    assert np.load(tmp_path / "index.box_offsets.npy").tolist() == [0, 3, 3, 8, 9, 13, 15, 20]


def test_storage_grows_with_the_boxes_not_with_max_boxes(tmp_path):
    """An image with 10 boxes costs 10 rows whatever max_boxes is (max_boxes only caps the boxes kept)."""
    records = [dataclasses.replace(r, image_box_feature=None) for r in make_records(6, dim=64, classes=None)]
    sizes = {}
    for max_boxes in (5, 100):
        out = tmp_path / str(max_boxes)
        stats = convert_to_shards(records, out, max_boxes=max_boxes, dtype="float32")
        assert stats["bytes"] == directory_bytes(out) > 0
        sizes[max_boxes] = {p.name: p.stat().st_size for p in out.glob("*.npy")}
    assert sizes[5] == sizes[100] and len(sizes[5]) == 2 + 7  # boxes, features; 7 index arrays
    boxes = sum(r.num_boxes for r in records)
    features = tmp_path / "100" / "shard-00000.features.npy"
    assert features.stat().st_size == 128 + boxes * 64 * 4  # the fixed header, then exactly the boxes' rows


def test_a_record_without_boxes_from_a_text_format_converts(tmp_path):
    records = make_records(2, classes=None, whole=False)
    empty = dataclasses.replace(records[0], image_id="empty", boxes=np.zeros((0, 4), np.float32))
    empty.features = np.zeros((0, 0), np.float32)  # what the TSV and JSON readers give for num_boxes 0
    convert_to_shards([records[0], empty], tmp_path)
    got = FeatureShards(tmp_path)["empty"]
    assert got.boxes.shape == (0, 4) and got.features.shape == (0, 6) and got.image_w == records[0].image_w


def test_float16_rounding_is_what_the_docstring_says(tmp_path):
    record = make_records(1, dim=4, whole=False)[0]
    record.features = np.array([[1 + 2**-12, 1e-6, 60000.0, -3.14159]] * 3, np.float32)
    convert_to_shards([record], tmp_path)
    got = FeatureShards(tmp_path)["img0"].features[0]
    np.testing.assert_array_equal(got, np.float16(record.features[0]).astype(np.float32))
    assert got[0] == 1.0  # 1 + 2^-12 is halfway to the next float16: ties to even


def test_more_boxes_than_max_keeps_the_first_and_counts(tmp_path):
    records = make_records(3, classes=None, whole=False)
    records[2].boxes, records[2].features = np.tile(records[2].boxes, (3, 1)), np.tile(records[2].features, (3, 1))
    stats = convert_to_shards(records, tmp_path, max_boxes=4, dtype="float32")
    assert (stats["truncated_records"], stats["dropped_boxes"]) == (1, 15 - 4)
    got = FeatureShards(tmp_path)["img2"]
    np.testing.assert_array_equal(got.boxes, records[2].boxes[:4])
    np.testing.assert_array_equal(got.features, records[2].features[:4])
    assert got.classes is None and got.image_box_feature is None


def test_bad_records_raise_or_are_skipped_and_counted(tmp_path):
    good = make_records(4, whole=False)
    nan = dataclasses.replace(good[0], image_id="nan", features=np.full_like(good[0].features, np.nan))
    wide = make_record(np.random.default_rng(1), "wide", 2, dim=7)
    duplicate = dataclasses.replace(good[1])
    huge = dataclasses.replace(good[2], image_id="huge", features=good[2].features * 1e6)
    no_classes = dataclasses.replace(good[3], image_id="noclasses", classes=None)
    stream = [good[0], nan, good[1], wide, duplicate, good[2], huge, no_classes, good[3]]
    with pytest.raises(FormatError, match=r"src, record 'nan', field 'features': expected finite values, found nan"):
        convert_to_shards(stream, tmp_path / "a", source="src")
    assert not (tmp_path / "a/index.json").exists()  # a failed conversion leaves no index
    counter = SkipCounter("skip", max_examples=10)
    stats = convert_to_shards(stream, tmp_path / "b", counter=counter, source="src")
    assert stats["records"] == 4 and stats["skipped"] == 5 == counter.total
    assert list(FeatureShards(tmp_path / "b").image_ids) == [r.image_id for r in good]
    messages = "\n".join(counter.examples)
    assert "record 'wide', field 'features': expected 6 columns, found 7" in messages
    assert "record 'img1', field 'image_id': expected unique ids, found a second record" in messages
    assert "record 'huge', field 'features': expected |values| <= 65504 for float16 (use dtype float32)" in messages
    assert "record 'noclasses', field 'classes': expected [1, 5] soft labels, found none" in messages


def test_an_unfinished_conversion_is_never_taken_for_a_finished_one(tmp_path):
    records = make_records(5)
    with pytest.raises(RuntimeError, match="interrupted"):
        with ShardWriter(tmp_path, 6, 5, 4, shard_size=2, with_image_box_feature=True) as writer:
            for record in records:
                writer.add(record)
            raise RuntimeError("interrupted")
    assert list(tmp_path.glob("shard-*.npy")) and not (tmp_path / "index.json").exists()
    with pytest.raises(FormatError, match="index.json: missing: not a feature-shard directory, or a conversion"):
        FeatureShards(tmp_path)
    convert_to_shards(records[:1], tmp_path, shard_size=2)  # a rerun clears the leftovers
    assert len(FeatureShards(tmp_path)) == 1 and len(list(tmp_path.glob("shard-*.npy"))) == 4  # 1 shard x 4 fields
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        convert_to_shards(records, tmp_path)
    convert_to_shards(records, tmp_path, overwrite=True)
    assert len(FeatureShards(tmp_path)) == 5


def test_damaged_index_json_is_an_error_naming_the_file(tmp_path):
    convert_to_shards(make_records(5), tmp_path, shard_size=2, max_boxes=5)
    index = json.loads((tmp_path / "index.json").read_text())
    for change, message in [
        ({"version": 99}, "format version 99, not 2: written by another version of vlbert_fast"),
        ({"num_shards": 4}, "inconsistent index: ValueError.'4 shards of 2 for 5 records'"),
        ({"num_classes": 6}, "inconsistent index: ValueError..fields"),
        ({"format": "something"}, "field 'format': expected 'vlbert_fast.feature_shards'"),
    ]:
        (tmp_path / "index.json").write_text(json.dumps({**index, **change}))
        with pytest.raises(FormatError, match=message):
            FeatureShards(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps(index)[:-5])
    with pytest.raises(FormatError, match="index.json: unreadable index"):
        FeatureShards(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(KeyError, match="'nope' is not in the feature shards"):
        FeatureShards(tmp_path)["nope"]
