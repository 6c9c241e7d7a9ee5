"""Format version 1 (padded): training refuses it with the command that converts it, and that conversion keeps
every value exactly (float32) and every record (no boxes, the whole-image feature, soft labels)."""

import argparse
import dataclasses

import numpy as np
import pytest

from vlbert_fast.commands import convert_features
from vlbert_fast.data.formats import FeatureShards, FormatError
from vlbert_fast.data.formats.shards_padded import PaddedFeatureShards, is_padded_directory, write_padded_shards

from .helpers import assert_same, make_record


def old_records():
    rng = np.random.default_rng(0)
    records = [make_record(rng, f"img{i}", [3, 0, 5, 1][i % 4], dim=6, classes=5) for i in range(7)]
    for record in records:
        record.image_box_feature = rng.normal(size=6).astype(np.float32)
    records[1] = dataclasses.replace(records[1], features=np.zeros((0, 6), np.float32))
    return records


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_version_1_is_refused_with_the_conversion_and_converts_exactly(tmp_path, capsys, dtype):
    records = old_records()
    old = tmp_path / "old"
    write_padded_shards(records, old, 6, 5, max_boxes=5, shard_size=3, dtype=dtype, with_image_box_feature=True)
    assert is_padded_directory(old) and np.load(old / "shard-00000.features.npy").shape == (3, 5, 6)  # padded
    with pytest.raises(FormatError) as info:
        FeatureShards(old)
    assert str(info.value) == (
        f"{old / 'index.json'}: format version 1 (every record padded to max_boxes, ids in index.json), which this "
        f"version no longer reads; convert it once (float32 values are kept exactly): vlbert-fast convert-features "
        f"{old} --out {old}_v2"
    )
    parser = argparse.ArgumentParser()
    convert_features.add_arguments(parser)
    argv = [str(old), "--out", str(tmp_path / "new"), "--dtype", dtype]
    assert convert_features.main(parser.parse_args(argv), None) == 0
    assert "wrote 7 records" in capsys.readouterr().out
    new, padded = FeatureShards(tmp_path / "new"), PaddedFeatureShards(old)
    assert list(new.image_ids) == [r.image_id for r in records]
    for i, record in enumerate(records):
        assert_same(new[record.image_id], padded.record_at(i))  # exact: the stored values, unchanged
        if dtype == "float32":
            assert_same(new[record.image_id], record)
