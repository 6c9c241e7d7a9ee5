"""The sentence-image relationship task (the original's WITH_REL_LOSS, Table 4's ablation): cross-entropy of
Linear(H -> 2) on the pooled first token of the labelled rows, on the padded and the packed path; the pooler and
the head train; a batch without labels still gives them a (zero) gradient."""

import dataclasses

import torch
import torch.nn.functional as F

from vlbert_fast.data import collate
from vlbert_fast.data.random import random_examples
from vlbert_fast.model import VLBertForPretraining


def labelled_batch(cfg, labels):
    examples = random_examples(cfg, len(labels), seed=5, text_only=0.0)
    return collate(
        [dataclasses.replace(ex, relationship_label=label) for ex, label in zip(examples, labels, strict=True)]
    )


def test_relationship_loss_is_the_cross_entropy_of_the_pooled_first_token(tiny_cfg):
    cfg = dataclasses.replace(tiny_cfg, relationship_head=True, packed=False)
    torch.manual_seed(0)
    model = VLBertForPretraining(cfg).eval()
    batch = labelled_batch(cfg, [1, 0, None, 1])
    assert batch.relationship_labels.tolist() == [1, 0, -100, 1]
    out = model(batch)
    hidden = model.vlbert(batch)[[0, 1, 3], 0]
    logits = model.relationship_head(torch.tanh(model.pooler.dense(hidden)))
    torch.testing.assert_close(out.relationship_logits, logits)
    torch.testing.assert_close(out.losses["relationship"], F.cross_entropy(logits, torch.tensor([1, 0, 1])))
    packed = VLBertForPretraining(dataclasses.replace(cfg, packed=True)).eval()
    packed.load_state_dict(model.state_dict())
    torch.testing.assert_close(packed(batch).losses["relationship"], out.losses["relationship"], rtol=1e-5, atol=1e-6)
    out.loss.backward()
    assert model.pooler.dense.weight.grad.abs().sum() > 0 and model.relationship_head.weight.grad.abs().sum() > 0


def test_no_labels_no_loss_but_every_parameter_gets_a_gradient(tiny_cfg):
    cfg = dataclasses.replace(tiny_cfg, relationship_head=True)
    model = VLBertForPretraining(cfg)
    batch = collate(random_examples(cfg, 3, seed=1))
    assert batch.relationship_labels is None
    out = model(batch)
    assert "relationship" not in out.losses and out.relationship_logits.shape == (0, 2)
    out.loss.backward()
    assert model.relationship_head.weight.grad is not None and model.pooler.dense.weight.grad is not None


def test_off_by_default_and_the_default_model_is_unchanged(tiny_cfg):
    torch.manual_seed(3)
    plain = VLBertForPretraining(tiny_cfg)
    assert plain.pooler is None and plain.relationship_head is None
    torch.manual_seed(3)
    with_head = VLBertForPretraining(dataclasses.replace(tiny_cfg, relationship_head=True))
    shared = {k: v for k, v in with_head.state_dict().items() if k in plain.state_dict()}
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in shared.items())  # built after, drawn after
