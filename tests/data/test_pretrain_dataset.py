"""Pretraining samples from the real formats: the whole-image region, confidence order, truncation, masking of
regions, text-only rows, the 1:1 mix, and bad records raised or skipped and counted."""

import json
import zipfile

import numpy as np
import pytest
import torch

from vlbert_fast.config import RunConfig, load_config
from vlbert_fast.data import IGNORE_INDEX, TokenKind, collate
from vlbert_fast.data.caption_dataset import Skipped, collate_pretrain
from vlbert_fast.data.formats import FormatError, RegionRecord
from vlbert_fast.data.pretrain_loader import DataConfigError, build_pretrain_data


def config(world, *overrides):
    return load_config(
        RunConfig,
        overrides=[
            f"data.root={world}",
            "data.num_workers=0",
            "train.micro_batch_size=4",
            "train.global_batch_size=4",
            *overrides,
        ],
    )


def test_whole_image_region_and_confidence_order(small_world):
    data = build_pretrain_data(config(small_world))
    ds = data.captions
    ds.masking = False
    for i in range(10):
        ex = ds[i]
        w, h = ex.image_size
        assert ex.boxes[0].tolist() == [0.0, 0.0, w - 1, h - 1]
        assert ex.roi_targets[0].abs().sum() == 0 and not ex.region_predict.any()
        confidence = ex.roi_targets[1:].max(dim=1).values
        assert (confidence[:-1] >= confidence[1:]).all()  # highest confidence first
        n = ex.num_regions - 1
        torch.testing.assert_close(ex.region_features[0], ex.region_features[1:].sum(0) / (n + 1e-5), atol=1e-5, rtol=0)
        assert ex.input_ids[0] == data.tokenizer.cls_id and ex.input_ids[-1] == data.tokenizer.sep_id


def record(n_boxes=3, w=50, h=40, image_box=None):
    rng = np.random.default_rng(0)
    boxes = np.array([[5, 5, 20, 20], [-10, 30, 60, 45], [10, 10, 12, 30]], dtype=np.float32)[:n_boxes]
    classes = np.zeros((n_boxes, 25), dtype=np.float32)
    for k, conf in enumerate([0.5, 0.9, 0.7][:n_boxes]):
        classes[k, k + 1] = conf
        classes[k, 0] = 1 - conf
    return RegionRecord("img", w, h, boxes, rng.random((n_boxes, 128), dtype=np.float32), classes, image_box)


def caption_record():
    from vlbert_fast.data.formats import CaptionRecord

    return CaptionRecord(image="img.png", caption="a red circle left of a blue square".split(), frcnn=None)


def test_build_clips_sorts_and_uses_image_box_feature(small_world):
    ds = build_pretrain_data(config(small_world)).captions
    ds.masking = False
    rec = record(image_box=np.full(128, 7.0, dtype=np.float32))
    ex = ds.build(caption_record(), rec, 0, "test")
    assert ex.boxes.tolist()[1:] == [[0.0, 30.0, 49.0, 39.0], [10.0, 10.0, 12.0, 30.0], [5.0, 5.0, 20.0, 20.0]]
    assert (ex.region_features[0] == 7.0).all()
    without = ds.build(caption_record(), record(), 0, "test")
    torch.testing.assert_close(without.region_features[0], torch.from_numpy(record().features.sum(0) / (3 + 1e-5)))


def test_truncation_keeps_sep_and_drops_lowest_confidence_first(small_world):
    ds = build_pretrain_data(config(small_world, "data.max_seq_len=9")).captions
    ds.masking = False
    ex = ds.build(caption_record(), record(), 0, "test")
    # 8 words + [CLS]/[SEP] = 10 text, 4 regions: the longer part (text) gives way until regions are longer
    assert ex.num_text + ex.num_regions <= 9
    assert int(ex.input_ids[-1]) == ds.tokenizer.sep_id
    ds6 = build_pretrain_data(config(small_world, "data.max_seq_len=6")).captions
    ds6.masking = False
    short = ds6.build(caption_record(), record(), 0, "test")
    # text gives way while it is at least as long as the regions (down to one word), then the least confident box
    assert (short.num_text, short.num_regions) == (3, 3)
    assert short.boxes[1:].tolist() == [[0.0, 30.0, 49.0, 39.0], [10.0, 10.0, 12.0, 30.0]]  # confidence 0.9, 0.7
    b = collate([short, ds.build(caption_record(), record(), 1, "test")])
    assert b.position_ids[0, :7].tolist() == [0, 1, 2, 3, 3, 3, 4]
    assert b.token_type_ids[0, :7].tolist() == [0, 0, 0, 2, 2, 2, 2]
    assert b.token_kind[0, 3:7].tolist() == [TokenKind.ROI] * 3 + [TokenKind.END]
    assert b.cu_seqlens.tolist() == [0, 7, 7 + b.seq_lens[1].item()]


def test_masked_regions_hide_the_whole_image_too(small_world):
    ds = build_pretrain_data(config(small_world, "data.roi_probability=1.0", "data.roi_mask_fraction=1.0")).captions
    ex = ds.build(caption_record(), record(), 0, "test")
    assert ex.region_masked.tolist() == [False, True, True, True] and ex.region_predict[1:].all()
    assert (ex.region_features[0] == 0).all()  # no unmasked detection is left to describe the image


def fixed_region_masks(monkeypatch, hidden: list[bool]):
    """The region masking draws replaced by a fixed pattern (region 0 first), to check what follows from them."""

    def draws(n, rng, cfg):
        assert n == len(hidden)  # every detection of the record is drawn for, before truncation
        masked = np.array(hidden, dtype=bool)
        return masked.copy(), masked

    monkeypatch.setattr("vlbert_fast.data.caption_dataset.mask_regions", draws)


def test_whole_image_mean_covers_the_detections_truncation_drops(small_world, monkeypatch):
    # Detections by confidence: 0.9, 0.7, 0.5. Mask the most confident; truncation to 6 tokens keeps only the
    # first two detections. The original's whole-image feature: the mean of the unmasked detections of the record,
    # before truncation, i.e. of the 0.7 and the 0.5 ones (which truncation drops afterwards).
    fixed_region_masks(monkeypatch, [False, True, False, False])
    ds = build_pretrain_data(config(small_world, "data.max_seq_len=6")).captions
    rec = record()
    ex = ds.build(caption_record(), rec, 0, "test")
    assert ex.num_regions == 3 and ex.region_masked.tolist() == [False, True, False]
    by_confidence = rec.features[[1, 2, 0]]
    want = (by_confidence.mean(0) * 3 - by_confidence[0]) / (3 - 1 + 1e-5)  # the original's formula
    torch.testing.assert_close(ex.region_features[0], torch.from_numpy(want), rtol=1e-6, atol=1e-7)
    # max_regions cuts like truncation, after the mean
    fixed_region_masks(monkeypatch, [False, False, False, True])
    one = build_pretrain_data(config(small_world, "data.max_regions=1")).captions.build(caption_record(), rec, 0, "t")
    assert one.num_regions == 2
    want = by_confidence[:2].sum(0) / (2 + 1e-5)
    torch.testing.assert_close(one.region_features[0], torch.from_numpy(want), rtol=1e-6, atol=1e-7)


def test_a_given_whole_image_feature_is_replaced_only_when_a_region_is_masked(small_world, monkeypatch):
    given = np.full(128, 7.0, dtype=np.float32)
    ds = build_pretrain_data(config(small_world)).captions
    fixed_region_masks(monkeypatch, [False, False, False, False])
    assert (ds.build(caption_record(), record(image_box=given), 0, "t").region_features[0] == 7.0).all()
    fixed_region_masks(monkeypatch, [False, False, True, False])
    ex = ds.build(caption_record(), record(image_box=given), 0, "t")
    want = record().features[[1, 0]].sum(0) / (2 + 1e-5)  # the given feature would show the masked region
    torch.testing.assert_close(ex.region_features[0], torch.from_numpy(want), rtol=1e-6, atol=1e-7)


def test_text_only_rows_and_the_one_to_one_mix(small_world):
    data = build_pretrain_data(config(small_world, "train.micro_batch_size=8", "train.global_batch_size=8"))
    assert len(data.sampler) == 40 // 4
    texts = data.texts
    ex = texts[3]
    assert ex.boxes is None and ex.num_text == data.captions.cfg.text_only_seq_len  # the corpus fills the row
    # The original's text-only rows are word pieces alone: no [CLS], no [SEP] (collate closes them with [END]).
    specials = {data.tokenizer.cls_id, data.tokenizer.sep_id}
    assert not specials & set(ex.input_ids.tolist()) and ex.mlm_labels.shape == ex.input_ids.shape
    row = collate([ex])
    assert row.token_kind[0].tolist() == [TokenKind.TEXT_ONLY] * ex.num_text + [TokenKind.END]
    assert row.position_ids[0, -1] == ex.num_text + 1 and row.token_type_ids[0, -1] == 2  # as the original's [END]
    for loaded in data.loader:
        batch = loaded.batch
        assert int(batch.has_image.sum()) == 4 and int((~batch.has_image).sum()) == 4
        assert ((batch.token_kind == TokenKind.TEXT_ONLY).any(1) == ~batch.has_image).all()
        labelled = batch.mlm_labels != IGNORE_INDEX
        assert bool(labelled.any())


def test_model_and_data_must_agree(small_world):
    with pytest.raises(DataConfigError, match="model.vocab_size is 30522; set model.vocab_size=1024"):
        build_pretrain_data(config(small_world, "model.vocab_size=30522"))
    with pytest.raises(DataConfigError, match="region features are 128-d but model.visual_feature_dim is 64; set"):
        build_pretrain_data(config(small_world, "model.visual_feature_dim=64"))
    with pytest.raises(DataConfigError, match="soft labels have 25 classes but model.num_roi_classes is 1601; set"):
        build_pretrain_data(config(small_world, "model.num_roi_classes=1601"))
    data = build_pretrain_data(config(small_world, "model.visual_feature_dim=64", "data.features="))
    with pytest.raises(FormatError, match="region features are 128-d, model.visual_feature_dim is 64"):
        data.captions[0]  # region JSONs: known record by record


def broken_world(tmp_path, world):
    """Caption records read from per-image JSON (no shards); record 1 points to a member the zip lacks."""
    lines = (world / "cc_train.jsonl").read_text().splitlines()[:6]
    bad = json.loads(lines[1])
    bad["frcnn"] = "frcnn.zip@/missing.json"
    lines[1] = json.dumps(bad)
    (tmp_path / "cc_train.jsonl").write_text("\n".join(lines) + "\n")
    for name in ("frcnn.zip", "corpus.txt"):
        (tmp_path / name).write_bytes((world / name).read_bytes())
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "vocab.txt").write_bytes((world / "tokenizer" / "vocab.txt").read_bytes())
    assert "missing.json" not in zipfile.ZipFile(tmp_path / "frcnn.zip").namelist()
    return tmp_path


def test_bad_record_raises_naming_file_and_record(tmp_path, small_world):
    root = broken_world(tmp_path, small_world)
    data = build_pretrain_data(config(root, "data.features=", "data.val_captions="))
    data.captions[0]
    with pytest.raises(FormatError, match=r"cc_train.jsonl, record 1: .*no member 'missing.json'"):
        data.captions[1]


def test_bad_record_is_skipped_and_counted(tmp_path, small_world):
    root = broken_world(tmp_path, small_world)
    data = build_pretrain_data(config(root, "data.features=", "data.val_captions=", "data.on_bad_record=skip"))
    item = data.captions[1]
    assert isinstance(item, Skipped) and "cc_train.jsonl, record 1: " in str(item.error)
    loaded = collate_pretrain([data.captions[0], item, data.captions[2]])
    assert loaded.batch.num_samples == 2 and len(loaded.skipped) == 1
    data.counter.handle(loaded.skipped[0].error)
    assert data.counter.total == 1 and "missing.json" in data.counter.report()
    assert list(data.counter.by_reason()) == [(str(root / "cc_train.jsonl"), loaded.skipped[0].error.reason)]


def test_relationship_task_swaps_half_the_captions(small_world):
    data = build_pretrain_data(config(small_world, "model.relationship_head=true"))
    ds = data.captions
    ds.masking = False
    labels = []
    for i in range(len(ds)):
        ex = ds[i]
        own = ds.tokenizer.encode(ds.records[i].caption).ids
        labels.append(ex.relationship_label)
        if ex.relationship_label == 1:
            assert ex.input_ids[1:-1].tolist() == own[: ex.num_text - 2]
    assert set(labels) == {0, 1} and 0.25 < labels.count(0) / len(labels) < 0.75
    mismatched = [i for i, label in enumerate(labels) if label == 0]
    assert any(ds[i].input_ids[1:-1].tolist() != ds.tokenizer.encode(ds.records[i].caption).ids for i in mismatched)
    assert data.val.relationship is False and data.val[0].relationship_label is None  # held-out pairs stay matched
    batch = collate([ds[0], ds[1], data.texts[0]])
    assert batch.relationship_labels.tolist()[2] == IGNORE_INDEX
    plain = build_pretrain_data(config(small_world)).captions
    assert plain[0].relationship_label is None
