"""Compact soft labels: each box keeps its K likeliest classes, renormalised; the reader gives the dense [N, C]
labels back; exact labels stay the default; convert-features turns exact shards into top-k ones."""

import argparse

import numpy as np
import pytest

from vlbert_fast.commands import convert_features
from vlbert_fast.data.formats import FeatureShards, convert_to_shards
from vlbert_fast.data.formats.shard_layout import dense_soft_labels, top_k_soft_labels
from vlbert_fast.data.formats.shard_writer import ShardWriter

from .helpers import make_record


def test_top_k_keeps_the_likeliest_renormalised_ties_to_the_lower_class():
    classes = np.array([[0.1, 0.5, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]], np.float32)
    ids, probs = top_k_soft_labels(classes, 2)
    assert ids.tolist() == [[1, 2], [0, 1], [0, 1]]
    np.testing.assert_allclose(probs, [[0.5 / 0.7, 0.2 / 0.7], [0.0, 0.0], [0.5, 0.5]], rtol=1e-6)
    dense = dense_soft_labels(ids, probs, 4)
    np.testing.assert_allclose(dense[0], [0.0, 0.5 / 0.7, 0.2 / 0.7, 0.0], rtol=1e-6)
    ids, probs = top_k_soft_labels(classes[:1], 1)
    assert ids.tolist() == [[1]] and probs.tolist() == [[1.0]]


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_top_k_shards_read_back_as_dense_renormalised_labels(tmp_path, dtype):
    rng = np.random.default_rng(0)
    records = [make_record(rng, f"img{i}", 1 + i % 5, dim=8, classes=40) for i in range(9)]
    exact = convert_to_shards(records, tmp_path / "exact", dtype=dtype, shard_size=4)
    topk = convert_to_shards(records, tmp_path / "top3", dtype=dtype, shard_size=4, soft_labels_topk=3)
    assert exact["soft_labels_topk"] is None and topk["soft_labels_topk"] == 3
    shards = FeatureShards(tmp_path / "top3")
    assert (shards.num_classes, shards.soft_labels_topk) == (40, 3)
    assert np.load(tmp_path / "top3/shard-00000.class_ids.npy").dtype == np.int16
    rtol = 2.0**-11 if dtype == "float16" else 1e-7
    for record in records:
        got = shards[record.image_id]
        want = dense_soft_labels(*top_k_soft_labels(record.classes, 3), 40)
        assert got.classes.shape == (record.num_boxes, 40) and (np.count_nonzero(got.classes, axis=1) == 3).all()
        np.testing.assert_allclose(got.classes, want, rtol=rtol, atol=0)
        np.testing.assert_allclose(got.classes.sum(1), 1.0, rtol=4 * rtol)
        np.testing.assert_array_equal(got.features, FeatureShards(tmp_path / "exact")[record.image_id].features)
    # labels: 40 values per box -> 3 ids + 3 probabilities per box (128 bytes: each .npy file's header)
    itemsize, boxes = np.dtype(dtype).itemsize, sum(r.num_boxes for r in records)

    def payload(directory, pattern):
        return sum(p.stat().st_size - 128 for p in (tmp_path / directory).glob(pattern))

    assert payload("exact", "shard-*.classes.npy") == boxes * 40 * itemsize
    assert payload("top3", "shard-*.class_*.npy") == boxes * 3 * (2 + itemsize)
    assert exact["bytes"] > topk["bytes"]


def test_top_k_settings_that_cannot_work_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"soft_labels_topk must be an integer in 1..39"):
        ShardWriter(tmp_path, 8, 40, 10, soft_labels_topk=40)
    with pytest.raises(ValueError, match="soft_labels_topk needs soft labels"):
        ShardWriter(tmp_path, 8, None, 10, soft_labels_topk=2)


def test_convert_features_turns_exact_shards_into_top_k(tmp_path, capsys):
    rng = np.random.default_rng(1)
    records = [make_record(rng, f"img{i}", 2 + i, dim=8, classes=12) for i in range(4)]
    convert_to_shards(records, tmp_path / "exact", dtype="float32")
    parser = argparse.ArgumentParser()
    convert_features.add_arguments(parser)
    argv = [str(tmp_path / "exact"), "--out", str(tmp_path / "top2"), "--dtype", "float32", "--soft-labels-topk", "2"]
    assert convert_features.main(parser.parse_args(argv), None) == 0
    assert "soft_labels_topk: 2" in capsys.readouterr().out
    shards = FeatureShards(tmp_path / "top2")
    for record in records:
        got = shards[record.image_id]
        np.testing.assert_array_equal(got.features, record.features)
        np.testing.assert_allclose(got.classes, dense_soft_labels(*top_k_soft_labels(record.classes, 2), 12))
    argv[-1] = "0"
    assert convert_features.main(parser.parse_args(argv), None) == 2
    assert "--soft-labels-topk must be >= 1" in capsys.readouterr().err
