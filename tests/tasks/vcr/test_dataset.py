"""Samples from the fixture files: the 4 rows' layout, token types, text_visual_index of tagged tokens, truncation,
regions and features, QA->R's conditioning, and errors that name the file."""

import dataclasses
import json

import pytest
import torch

from vlbert_fast.config import ModelConfig, VisualConfig
from vlbert_fast.data.formats import FormatError
from vlbert_fast.tasks.base import collate_task
from vlbert_fast.tasks.vcr.dataset import truncate_q2a, truncate_qa2r
from vlbert_fast.tasks.vcr.text import TaggedText

from .conftest import FEATURE_DIM, RECORDS, line, make_task, write_root

MODEL = ModelConfig(visual_feature_dim=FEATURE_DIM)


def task(root, tokenizer, model=MODEL, **options):
    return make_task(root, tokenizer, model, **options)


def pieces(tokenizer, row):
    return tokenizer.convert_ids_to_tokens(row.input_ids.tolist())


def test_q2a_rows(vcr_root, tokenizer):
    sample = task(vcr_root, tokenizer).datasets("val")[0]
    assert len(sample.rows) == 4
    assert sample.target["label"].item() == 1
    assert sample.meta == {"annot_id": "val-0", "mode": "q2a", "conditioned_on": None, "label": 1}
    row = sample.rows[2]  # answer "[0, 2] is sad"
    assert pieces(tokenizer, row) == ["[CLS]", "why", "is", "casey", "smiling", "?", "[SEP]", "casey", "and",
                                      "riley", "is", "sad", "[SEP]"]  # fmt: skip
    assert row.token_type_ids.tolist() == [0] * 7 + [1] * 6
    # Casey is object 0 -> region 1; Riley is object 2 -> region 3; the rest the whole image
    assert row.text_visual_index.tolist() == [0, 0, 0, 1, 0, 0, 0, 1, 0, 3, 0, 0, 0]
    first = pieces(tokenizer, sample.rows[0])
    assert first[first.index("[SEP]") + 1 :] == ["because", "riley", "told", "a", "joke", "[SEP]"]


def test_regions_features_and_batch(vcr_root, tokenizer):
    t = task(vcr_root, tokenizer)
    sample = t.datasets("val")[0]
    row = sample.rows[0]
    assert row.image_size == (64.0, 56.0)
    assert row.boxes.tolist() == [[0, 0, 63, 55], [10, 12, 29, 41], [40, 30, 59, 49], [2, 2, 9, 9]]
    features = torch.arange(3 * FEATURE_DIM, dtype=torch.float32).view(3, FEATURE_DIM)
    assert torch.equal(row.region_features[1:], features)
    assert torch.allclose(row.region_features[0], features.mean(0))  # no image-box feature: the mean
    assert row.region_masks is None  # precomputed mode: no RoI grid to mask
    tb = collate_task(t, [t.datasets("val")[i] for i in (0, 1)])
    assert tb.rows_per_sample == 4 and tb.batch.num_samples == 8
    assert tb.targets["label"].tolist() == [1, 0]
    tb.batch.validate(vocab_size=tokenizer.vocab_size, max_positions=512, feature_dim=FEATURE_DIM)


def test_qa2r_conditions_on_the_right_answer_and_test_on_each(vcr_root, tokenizer):
    t = task(vcr_root, tokenizer, mode="qa2r")
    sample = t.datasets("val")[0]
    assert sample.meta["conditioned_on"] == 1 and sample.target["label"].item() == 1
    row = sample.rows[1]  # query: question + right answer "[0] is happy"; rationale "[0] is smiling"
    assert pieces(tokenizer, row) == ["[CLS]", "why", "is", "casey", "smiling", "?", "casey", "is", "happy",
                                      "[SEP]", "casey", "is", "smiling", "[SEP]"]  # fmt: skip
    assert row.token_type_ids.tolist() == [0] * 10 + [1] * 4
    assert row.text_visual_index.tolist() == [0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]
    test = t.datasets("test")
    assert len(test) == 8  # 2 annotations x 4 answers
    assert [test[i].meta["conditioned_on"] for i in range(4)] == [0, 1, 2, 3]
    assert test[0].target == {} and t.collate_targets([test[0], test[1]]) == {}
    assert pieces(tokenizer, test[2].rows[0])[6:10] == ["casey", "and", "riley", "is"]


def test_truncation_follows_the_original():
    text = lambda n, tag=0: TaggedText(list(range(n)), [tag] * n)  # noqa: E731
    q, answers = truncate_q2a(text(5), [text(2), text(9)], limit=8)
    assert len(q) == 4 and [len(a) for a in answers] == [2, 4]  # the longer part gives way, question shared
    q, a, r = truncate_qa2r(text(3), text(3), text(10), limit=8)
    # r pops down to q + a = 6; then q and r take turns: q 2, r 5, q 1, r 4
    assert (len(q), len(a), len(r)) == (1, 3, 4)
    q, a, r = truncate_qa2r(text(1), text(6), text(2), limit=5)
    assert (len(q), len(a), len(r)) == (1, 2, 2)


def test_max_text_len_bounds_every_row(vcr_root, tokenizer):
    sample = task(vcr_root, tokenizer, max_text_len=5).datasets("val")[0]
    assert all(row.num_text <= 5 + 3 for row in sample.rows)


def test_end_to_end_rows_carry_the_image_and_masks(vcr_root, tokenizer):
    visual = VisualConfig(mode="e2e", depth=18, width=4, short_side=48, long_side=80, min_image_side=8)
    sample = task(vcr_root, tokenizer, model=dataclasses.replace(MODEL, visual_feature_dim=32, visual=visual)).datasets(
        "val"
    )[0]
    row = sample.rows[0]
    assert row.image.shape[0] == 3 and row.region_features is None
    assert row.region_masks.shape == (4, 14, 14)
    assert row.region_masks[0].sum() == 196  # the whole image
    assert row.region_masks[1].sum() == 196  # a polygon filling its box
    assert 0 < row.region_masks[2].sum() < 196  # a triangle


def test_errors_name_the_record_and_files(vcr_root, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="unknown split 'testA'"):
        task(vcr_root, tokenizer).datasets("testA")
    # the annotation lists 2 objects, the metadata has 3 boxes
    bad = line("val-9", ["person", "chair"], ["why", [0]], [["a"]] * 4, [["b"]] * 4, 0, 0)
    root = write_root(tmp_path / "bad", records=[bad])
    with pytest.raises(FormatError, match=r"val.jsonl, line 1, field 'objects': expected 3 objects"):
        task(root, tokenizer).datasets("val")[0]
    # features of another width
    with pytest.raises(FormatError, match=r"features.*expected 7-d"):
        task(vcr_root, tokenizer, model=ModelConfig(visual_feature_dim=7)).datasets("val")[0]
    # an image missing from the shards
    other = {**RECORDS[0], "img_fn": "m1/other.png"}
    root = write_root(tmp_path / "missing", records=[other])
    with pytest.raises(FormatError, match=r"img_fn 'm1/other.png' is not in the feature shards"):
        task(root, tokenizer).datasets("val")[0]
    # a missing metadata file
    (vcr_root / "vcr1images" / "m1" / "img0.json").unlink()
    with pytest.raises(FormatError, match="img0.json"):
        task(vcr_root, tokenizer).datasets("val")[0]


def test_metadata_errors_say_which_record_led_there(vcr_root, tokenizer):
    (vcr_root / "vcr1images" / "m1" / "img0.json").write_text(json.dumps({"boxes": [], "segms": [], "width": 0}))
    with pytest.raises(FormatError, match=r"img0.json \(for .*val.jsonl, line 1\), field 'width'"):
        task(vcr_root, tokenizer).datasets("val")[0]
