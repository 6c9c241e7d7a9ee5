"""The VQA task on a small synthetic world: the synthetic files in the official format, the samples, the head on
[MASK], the loss, the head's initialisation from the MLM transform, the key-mapping report, metrics and writer."""

import json
import os
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from vlbert_fast.config import SynthConfig
from vlbert_fast.config.finetune_run import FinetuneConfig
from vlbert_fast.config.tasks import VQAOptions
from vlbert_fast.data.formats import FeatureShards
from vlbert_fast.data.synth.world import cached_world
from vlbert_fast.model import VLBertForPretraining, save_pretrained
from vlbert_fast.model.pretrained import PretrainedError
from vlbert_fast.model.vlbert_finetuning import build_finetune_model
from vlbert_fast.tasks import build_task, collate_task
from vlbert_fast.tasks.vqa.answers import answer_accuracy, soft_scores
from vlbert_fast.tasks.vqa.formats import read_annotations, read_questions
from vlbert_fast.tasks.vqa.synth import IMAGE_KEY, image_objects

SMALL_WORLD = SynthConfig(train_images=48, val_images=24, corpus_lines=50)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    with mock.patch.dict(os.environ, {"VLBERT_FAST_CACHE": str(path)}):
        yield path


@pytest.fixture(scope="module")
def task(cache, tmp_path_factory):
    cfg = FinetuneConfig(vqa=VQAOptions(synth=SMALL_WORLD, synth_noise=0.3))
    return build_task(cfg, tmp_path_factory.mktemp("run"))


def test_synthetic_files_are_official_and_true_to_the_world(task):
    root = task.root
    q = json.loads((root / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())
    a = json.loads((root / "v2_mscoco_val2014_annotations.json").read_text())
    assert {"info", "task_type", "data_type", "data_subtype", "license", "questions"} <= set(q)
    assert set(q["questions"][0]) == {"image_id", "question", "question_id"}
    ann = a["annotations"][0]
    assert set(ann) == {"question_id", "image_id", "question_type", "answer_type", "multiple_choice_answer", "answers"}
    assert set(ann["answers"][0]) == {"answer", "answer_confidence", "answer_id"}
    assert not (root / "v2_mscoco_test-dev2015_annotations.json").exists()
    assert read_questions(root / "v2_OpenEnded_mscoco_test-dev2015_questions.json")

    world = cached_world(SMALL_WORLD)
    names = json.loads((world / "world.json").read_text())["class_names"]
    shards = FeatureShards(world / "features")
    questions = read_questions(root / "v2_OpenEnded_mscoco_train2014_questions.json")
    anns = read_annotations(root / "v2_mscoco_train2014_annotations.json")
    assert len(questions) == 2 * SMALL_WORLD.train_images
    right_share = []
    for question in questions:
        ann = anns[question.question_id]
        objects = image_objects(shards, IMAGE_KEY.format(image_id=question.image_id), names)
        words = question.question.split()
        if question.question.startswith("what colour"):
            truth = next(c for c, s in objects if s == words[4])
        elif question.question.startswith("what shape"):
            truth = next(s for c, s in objects if c == words[4])
        else:
            truth = str(len(objects))
        assert ann.multiple_choice_answer == truth, question
        assert len(ann.answers) == 10
        right_share.append(sum(x == truth for x in ann.answers) / 10)
    assert 0.6 < sum(right_share) / len(right_share) < 0.8  # noise 0.3


def test_sample_layout_and_target(task):
    data = task.datasets("val")
    sample = data[3]
    row = sample.rows[0]
    tok = task.tokenizer
    ids = row.input_ids.tolist()
    assert ids[0] == tok.cls_id and ids[-3:] == [tok.sep_id, tok.mask_id, tok.sep_id]
    assert row.token_type_ids.tolist() == [0] * (len(ids) - 2) + [1, 1]
    assert row.boxes[0].tolist() == [0.0, 0.0, 63.0, 63.0]  # the whole image first
    ann = task.annotations("val")[sample.meta["question_id"]]
    expected = torch.zeros(len(task.answers))
    for answer, score in soft_scores(ann.answers).items():
        expected[task.answers.index(answer)] = score
    assert torch.equal(sample.target["scores"], expected)
    test = task.datasets("test")
    assert test[0].target == {} and task.collate_targets([test[0], test[1]]) == {}


def test_head_reads_the_mask_position(task):
    head = task.build_head().eval()
    batch = collate_task(task, [task.datasets("val")[i] for i in (0, 5, 9)])
    hidden = torch.randn(*batch.batch.input_ids.shape, task.cfg.model.hidden_size)
    logits = head(hidden, batch)
    mask_pos = (batch.batch.input_ids == task.tokenizer.mask_id).nonzero()
    assert mask_pos[:, 0].tolist() == [0, 1, 2]
    x = hidden[mask_pos[:, 0], mask_pos[:, 1]]
    expected = head.classifier(head.layer_norm(F.gelu(head.dense(x))))
    torch.testing.assert_close(logits, expected)


def test_loss_is_bce_summed_over_answers_and_averaged_over_samples(task):
    logits = torch.randn(3, len(task.answers))
    scores = torch.rand(3, len(task.answers))
    p = torch.sigmoid(logits)
    by_hand = -(scores * p.log() + (1 - scores) * (1 - p).log()).sum(1).mean()
    torch.testing.assert_close(task.loss(logits, {"scores": scores}), by_hand)


def test_init_from_export_reports_and_initialises_the_head(task, tmp_path):
    cfg = task.cfg.model
    torch.manual_seed(1)
    pretrained = VLBertForPretraining(cfg)
    state = pretrained.state_dict()
    save_pretrained(state, cfg, tmp_path / "export")
    model, report = build_finetune_model(cfg, task, tmp_path / "export")
    for name, value in model.vlbert.state_dict().items():
        assert torch.equal(value, state[f"vlbert.{name}"]), name
    head = model.head
    assert torch.equal(head.dense.weight, state["mlm_head.dense.weight"])
    assert torch.equal(head.dense.bias, state["mlm_head.dense.bias"])
    assert torch.equal(head.layer_norm.weight, state["mlm_head.layer_norm.weight"])
    assert torch.equal(head.layer_norm.bias, state["mlm_head.layer_norm.bias"])
    assert set(report.loaded) == {k for k in state if k.startswith("vlbert.")}
    assert set(report.dropped) == {k for k in state if k.startswith(("mlm_head.", "roi_head."))}
    assert set(report.head_initialised) == {
        "head.dense.weight",
        "head.dense.bias",
        "head.layer_norm.weight",
        "head.layer_norm.bias",
    }
    assert set(report.new) == {"head.classifier.weight", "head.classifier.bias"}
    text = str(report)
    assert "head.dense.weight <- mlm_head.dense.weight" in text and "dropped" in text and "mlm_head" in text


def test_init_from_another_architecture_names_the_fields(task, tmp_path):
    import dataclasses

    other = dataclasses.replace(task.cfg.model, hidden_size=64, intermediate_size=256)
    save_pretrained(VLBertForPretraining(other).state_dict(), other, tmp_path / "export")
    with pytest.raises(PretrainedError, match=r"model.hidden_size: 64 there, 128 here") as err:
        build_finetune_model(task.cfg.model, task, tmp_path / "export")
    assert "model.intermediate_size: 256 there, 512 here" in str(err.value)


def test_metrics_and_writer(task, tmp_path):
    anns = task.annotations("val")
    right = [{"question_id": q, "answer": a.multiple_choice_answer} for q, a in anns.items()]
    metrics = task.metrics(right, "val")
    expected = sum(answer_accuracy(a.multiple_choice_answer, a.answers) for a in anns.values()) / len(anns)
    assert metrics["accuracy"] == pytest.approx(expected)
    assert metrics["accuracy"] > 0.95  # noise 0.3: the right answer almost always has 4 or more of the 10
    assert set(metrics) >= {"accuracy", "accuracy_other", "accuracy_number"}
    with pytest.raises(ValueError, match="questions without a prediction"):
        task.metrics(right[1:], "val")
    assert task.metrics(right, "test") == {}
    path = task.write_predictions(list(reversed(right)), "test", tmp_path)
    assert path.name == "vqa_OpenEnded_mscoco_test-dev2015_vlbert_fast_results.json"
    rows = json.loads(path.read_text())
    assert [r["question_id"] for r in rows] == sorted(anns) and set(rows[0]) == {"question_id", "answer"}


def test_answer_vocabulary_is_saved_and_reused(cache, tmp_path):
    cfg = FinetuneConfig(vqa=VQAOptions(synth=SMALL_WORLD, synth_noise=0.3))
    first = build_task(cfg, tmp_path)
    assert len(first.answers) == 12  # 6 colours, 4 shapes, counts 1 and 2
    assert (tmp_path / "answers.txt").read_text().splitlines() == first.answers
    (tmp_path / "answers.txt").write_text("red\nblue\n")  # a run's saved vocabulary wins over rebuilding
    assert build_task(cfg, tmp_path).answers == ["red", "blue"]


def test_vocab_size_mismatch_is_explained(cache, tmp_path):
    cfg = FinetuneConfig(vqa=VQAOptions(synth=SMALL_WORLD))
    cfg.model.vocab_size = 999
    with pytest.raises(ValueError, match="has 1024 tokens but model.vocab_size is 999"):
        build_task(cfg, tmp_path)
