"""The task on a small dataset in the exact files: samples (text, RoIs of each protocol, features, labels),
splits, predictions, the accuracy, the predictions file, and the cross-file errors."""

import json
import pickle

import numpy as np
import pytest
import torch

from vlbert_fast.data.formats import FormatError
from vlbert_fast.tasks import collate_task

from .conftest import REFS, feature_rows

WHOLE = [0.0, 0.0, 99.0, 79.0]


def test_ground_truth_protocol_sample(make_task, tokenizer):
    task = make_task()
    train = task.datasets("train")
    assert len(train) == 2  # one sample per sentence of the train ref
    sample = train[1]
    (row,) = sample.rows
    assert tokenizer.convert_ids_to_tokens(row.input_ids.tolist()) == ["[CLS]", "man", "on", "the", "left", "[SEP]"]
    # the whole image, then the image's annotation boxes in file order, clipped to the image
    np.testing.assert_array_equal(row.boxes.numpy(), [WHOLE, [10, 10, 30, 50], [60, 30, 99, 79]])
    assert row.image_size == (100.0, 80.0)
    # each RoI took the feature row stored for its (unclipped) box; the whole image the mean of the RoIs'
    rois = feature_rows([[10, 10, 30, 50], [60, 30, 110, 80]])
    np.testing.assert_allclose(row.region_features.numpy(), np.concatenate([rois.mean(0, keepdims=True), rois]))
    # labels: IoU with the target (10, 10, 30, 50) > 0.5
    np.testing.assert_array_equal(sample.target["labels"].numpy(), [0, 1, 0])
    assert sample.meta["ref_id"] == 0 and sample.meta["sent_id"] == 1 and sample.meta["image_id"] == 1


def test_detected_protocols(make_task):
    task = make_task(train_boxes="detected+gt", eval_boxes="detected")
    (row,) = task.datasets("train")[0].rows
    # detections first (file order), then the annotation boxes
    np.testing.assert_array_equal(
        row.boxes.numpy(), [WHOLE, [12, 10, 32, 50], [70, 0, 80, 10], [10, 10, 30, 50], [60, 30, 99, 79]]
    )
    # (12, 10, 32, 50) against the target (10, 10, 30, 50): IoU 18 / 22 > 0.5
    np.testing.assert_array_equal(task.datasets("train")[0].target["labels"].numpy(), [0, 1, 0, 1, 0])
    val = task.datasets("val")[0]
    np.testing.assert_array_equal(val.rows[0].boxes.numpy(), [WHOLE, [12, 10, 32, 50], [70, 0, 80, 10]])
    np.testing.assert_array_equal(val.target["labels"].numpy(), [0, 0, 0])  # the dog was not detected


def test_splits(make_task):
    task = make_task()
    assert [len(task.datasets(s)) for s in ("train", "val", "testA", "testB", "test")] == [2, 1, 1, 1, 2]
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        task.datasets("dev")


def test_max_regions_and_expression_length(make_task):
    (row,) = make_task(max_regions=1, max_expression_len=2).datasets("train")[1].rows
    assert row.boxes.shape[0] == 2 and row.input_ids.tolist()[-1] == 3 and len(row.input_ids) == 4


def test_predict_metrics_and_file(make_task, tmp_path):
    task = make_task()
    samples = [task.datasets("train")[0], task.datasets("val")[0], task.datasets("testA")[0]]
    batch = collate_task(task, samples)
    assert batch.targets["labels"].shape == (3, 3)
    logits = torch.tensor([[0.0, 5.0, 1.0], [0.0, 5.0, 1.0], [0.0, 1.0, 9.0]])
    preds = task.predict(logits, batch)
    assert [p["box"] for p in preds] == [[10, 10, 30, 50], [10, 10, 30, 50], [50, 40, 80, 70]]
    assert [(p["ref_id"], p["sent_id"]) for p in preds] == [(0, 0), (1, 2), (2, 3)]
    # right, wrong (the dog is (60, 30, 110, 80)), wrong (the blue car is (0, 0, 40, 40))
    metrics = task.metrics(preds, "train")
    assert metrics["accuracy"] == pytest.approx(1 / 3)
    path = task.write_predictions(preds, "val", tmp_path / "out")
    assert path.name == "refcoco+_val.json" and json.loads(path.read_text()) == preds


def test_loss_ignores_padding(make_task):
    task = make_task(train_boxes="detected+gt")
    batch = collate_task(task, [task.datasets("testA")[0], task.datasets("train")[0]])
    labels = batch.targets["labels"]
    np.testing.assert_array_equal(labels.numpy(), [[0, 1, 0, -1, -1], [0, 1, 0, 1, 0]])  # -1: padding
    logits = torch.tensor([[0.5, 2.0, -1.0, -torch.inf, -torch.inf], [0.3, -0.2, 1.5, 0.1, 0.0]], requires_grad=True)
    loss = task.loss(logits, batch.targets)
    x = torch.tensor([0.5, 2.0, -1.0, 0.3, -0.2, 1.5, 0.1, 0.0])
    y = torch.tensor([0.0, 1, 0, 0, 1, 0, 1, 0])
    expected = -(y * torch.log(torch.sigmoid(x)) + (1 - y) * torch.log(1 - torch.sigmoid(x))).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[0, 3:] == 0).all()
    empty = task.loss(logits, {"labels": torch.full((2, 5), -1.0)})
    assert empty.item() == 0 and empty.requires_grad


def test_ref_pointing_to_another_images_annotation(dataset_root, make_task):
    refs = [dict(r) for r in REFS]
    refs[1]["ann_id"] = 201
    (dataset_root / "refcoco+" / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    with pytest.raises(FormatError, match=r"refs\(unc\).p, record 'ref_id 1', field 'ann_id'.*found ann_id 201 "):
        make_task().datasets("val")


def test_box_without_features_is_named(dataset_root, make_task):
    from vlbert_fast.data.formats import RegionRecord, convert_to_shards

    boxes = np.array([[10, 10, 30, 50]], dtype=np.float32)
    records = [RegionRecord(str(i), 100, 80, boxes, feature_rows(boxes)) for i in (1, 2)]
    convert_to_shards(records, dataset_root / "features", overwrite=True)
    with pytest.raises(
        FormatError, match=r"features, record 1, field 'boxes': expected a box within 0.5 px of \[60.0, 30.0"
    ):
        make_task().datasets("train")[0]
    (dataset_root / "dets.json").write_text('{"2": [[0, 0, 5, 5]]}')
    with pytest.raises(FormatError, match=r"dets.json, record 1: no detections \(val sample 0\)"):
        make_task(eval_boxes="detected", detections="dets.json").datasets("val")[0]


def test_every_region_format_gives_the_same_samples(dataset_root, make_task):
    from vlbert_fast.data.formats import FeatureShards, write_bua_tsv, write_region_json

    shards = FeatureShards(dataset_root / "features")
    records = [shards[k] for k in ("1", "2")]
    write_bua_tsv(dataset_root / "regions.tsv", records)
    (dataset_root / "regions").mkdir()
    for record in records:
        write_region_json(dataset_root / "regions" / f"{record.image_id}.json", record)
    expected = make_task(train_boxes="detected+gt").datasets("train")[0].rows[0]
    for features in ("regions.tsv", "regions"):
        row = make_task(train_boxes="detected+gt", features=features).datasets("train")[0].rows[0]
        torch.testing.assert_close(row.region_features, expected.region_features)
        torch.testing.assert_close(row.boxes, expected.boxes)
    with pytest.raises(FormatError, match=r"nothing.json: no region features here"):
        make_task(features="nothing.json").datasets("train")[0]
