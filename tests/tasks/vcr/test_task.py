"""The task's head, loss, predictions, metrics and output file through the Task protocol."""

import math

import pytest
import torch
import torch.nn.functional as F

from vlbert_fast.config import ModelConfig
from vlbert_fast.config.tasks import VCROptions
from vlbert_fast.model.vlbert import VLBertModel
from vlbert_fast.tasks.base import collate_task
from vlbert_fast.tasks.vcr.head import VCRHead, init_pooler

from .conftest import FEATURE_DIM, make_task

MODEL = ModelConfig(visual_feature_dim=FEATURE_DIM, hidden_size=32, num_attention_heads=2, intermediate_size=64)


def make(root, tokenizer, **options):
    return make_task(root, tokenizer, MODEL, **options)


def test_head_scores_each_row_from_its_pooled_cls(vcr_root, tokenizer):
    torch.manual_seed(0)
    t = make(vcr_root, tokenizer, classifier_dropout=0.0)
    tb = collate_task(t, [t.datasets("val")[i] for i in (0, 1)])
    hidden = VLBertModel(t.model_cfg)(tb.batch)
    head = t.build_head()
    calls = []
    head.register_forward_hook(lambda *_: calls.append(1))
    logits = head(hidden, tb)
    assert logits.shape == (2, 4) and calls == [1]
    want = head.scorer(torch.tanh(head.pooler(hidden[:, 0]))).view(2, 4)
    assert torch.allclose(logits, want)
    t.loss(logits, tb.targets).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


def test_head_initialisation_and_the_pooler_from_a_state_dict():
    head = VCRHead(8, 0.1)
    assert head.scorer.bias.item() == 0.0 and abs(head.pooler.weight.std().item() - 0.02) < 0.01
    state = {"bert.pooler.dense.weight": torch.full((8, 8), 0.5), "bert.pooler.dense.bias": torch.ones(8)}
    lines = init_pooler(head, state)
    assert torch.equal(head.pooler.weight, state["bert.pooler.dense.weight"])
    assert torch.equal(head.pooler.bias, torch.ones(8))
    assert lines[0] == "vcr head: pooler.dense.weight <- bert.pooler.dense.weight"
    assert "fresh" in init_pooler(VCRHead(8), {"mlm_head.dense.weight": torch.zeros(8, 8)})[0]
    with pytest.raises(ValueError, match=r"has shape \(4, 4\), the head needs \(8, 8\)"):
        init_pooler(VCRHead(8), {"pooler.dense.weight": torch.zeros(4, 4), "pooler.dense.bias": torch.zeros(8)})


def test_losses_by_hand(vcr_root, tokenizer):
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    label = torch.tensor([0, 2])
    softmax = make(vcr_root, tokenizer).loss(logits, {"label": label})
    want = (-(2 - math.log(math.exp(2) + 3)) - (0 - math.log(math.e + 3))) / 2
    assert softmax.item() == pytest.approx(want, rel=1e-6)
    sigmoid = make(vcr_root, tokenizer, loss="sigmoid").loss(logits, {"label": label})
    target = torch.tensor([[1.0, 0, 0, 0], [0, 0, 1, 0]])
    assert sigmoid.item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, target).item(), rel=1e-6)


def test_predictions_metrics_and_file(vcr_root, tokenizer, tmp_path):
    t = make(vcr_root, tokenizer)
    tb = collate_task(t, [t.datasets("val")[i] for i in (0, 1)])
    preds = t.predict(torch.tensor([[0.0, 3.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0]]), tb)  # right, wrong
    assert preds[0]["annot_id"] == "val-0" and sum(preds[0]["probs"]) == pytest.approx(1.0)
    assert t.metrics(preds, "val") == {"q2a_accuracy": 0.5}
    a_csv = t.write_predictions(preds, "val", tmp_path)
    assert a_csv.name == "vcr_q2a_val.csv"
    # QA->R with the Q->A run's CSV: both right for val-0 only if its rationale is right
    r = make(vcr_root, tokenizer, mode="qa2r", q2a_predictions=str(a_csv))
    rb = collate_task(r, [r.datasets("val")[i] for i in (0, 1)])
    rpreds = r.predict(torch.tensor([[0.0, 3.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]]), rb)  # labels 1, 2: both right
    assert r.metrics(rpreds, "val") == {"qa2r_accuracy": 1.0, "q2a_accuracy": 0.5, "q2ar_accuracy": 0.5}
    assert r.write_predictions(rpreds, "val", tmp_path).name == "vcr_qa2r_val.csv"


def test_test_split_predictions_fill_the_leaderboard_half(vcr_root, tokenizer, tmp_path):
    r = make(vcr_root, tokenizer, mode="qa2r")
    test = r.datasets("test")
    preds = []
    for start in range(0, len(test), 4):
        tb = collate_task(r, [test[i] for i in range(start, start + 4)])
        preds += r.predict(torch.randn(4, 4), tb)
    assert r.metrics(preds, "test") == {}  # no labels: nothing to score
    rows = (r.write_predictions(preds, "test", tmp_path)).read_text().splitlines()
    assert len(rows) == 3 and all(cell for row in rows[1:] for cell in row.split(","))  # 2 annotations, 16 cells


def test_options_are_validated():
    with pytest.raises(ValueError, match="mode must be one of"):
        VCROptions(mode="q2ar")
    with pytest.raises(ValueError, match="loss must be one of"):
        VCROptions(loss="hinge")
