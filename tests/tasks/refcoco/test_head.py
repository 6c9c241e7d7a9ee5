"""The per-RoI head: logits of each RoI token in place, -inf padding, every submodule called once per forward even
with no RoI (ZeRO-3), initialisation from the pretraining masked-RoI head."""

import torch

from vlbert_fast.config import ModelConfig
from vlbert_fast.data.collate import Example
from vlbert_fast.model import VLBertForPretraining
from vlbert_fast.tasks import TaskBatch, collate_task
from vlbert_fast.tasks.refcoco import RefCOCOHead


def _count_calls(head):
    calls = {}
    for name, module in head.named_modules():
        module.register_forward_hook(lambda m, i, o, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
    return calls


def test_logits_in_place_with_padding(make_task):
    task = make_task(train_boxes="detected+gt")
    batch = collate_task(task, [task.datasets("train")[0], task.datasets("val")[0], task.datasets("testA")[0]])
    # train: 1 + 4 RoIs (detected + gt); val: 1 + 2 gt; testA: 1 + 2 gt
    torch.manual_seed(0)
    hidden_BLH = torch.randn(*batch.batch.input_ids.shape, 8)
    head = task.build_head()
    calls = _count_calls(head)
    logits = head(hidden_BLH, batch)
    assert logits.shape == (3, 5)
    assert calls == {"": 1, "dense": 1, "dropout": 1, "classifier": 1}
    assert torch.isinf(logits[1, 3:]).all() and torch.isinf(logits[2, 3:]).all() and torch.isfinite(logits[0]).all()
    b = batch.batch
    for s, r in [(0, 0), (0, 4), (1, 2), (2, 1)]:
        position = b.input_ids.shape[1] - 1 - (b.token_kind[s].flip(0) == 2).int().argmax()  # last RoI of row s
        position = position - (b.token_kind[s] == 2).sum() + 1 + r
        expected = head.classifier(torch.nn.functional.gelu(head.dense(hidden_BLH[s, position])))
        torch.testing.assert_close(logits[s, r], expected[0])
    loss = task.loss(logits, batch.targets)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())


def test_every_submodule_runs_on_zero_rois():
    head = RefCOCOHead(8)
    calls = _count_calls(head)
    from vlbert_fast.data.collate import collate

    batch = collate([Example(input_ids=torch.tensor([2, 5, 3])), Example(input_ids=torch.tensor([2, 3]))])
    logits = head(torch.randn(2, batch.input_ids.shape[1], 8), TaskBatch(batch, {}, [{}, {}], 1))
    assert logits.shape == (2, 0)
    assert calls == {"": 1, "dense": 1, "dropout": 1, "classifier": 1}
    logits.sum().backward()  # a graph even with nothing in it
    assert head.dense.weight.grad is not None and head.dense.weight.grad.abs().sum() == 0


def test_init_from_the_pretraining_roi_head(make_task, tiny_cfg: ModelConfig):
    task = make_task()
    task.hidden_size = tiny_cfg.hidden_size  # the head of a model of another size than the fixture's
    state = VLBertForPretraining(tiny_cfg).state_dict()
    head = task.build_head()
    report = task.init_head(head, state)
    torch.testing.assert_close(head.dense.weight, state["roi_head.dense.weight"], rtol=0, atol=0)
    torch.testing.assert_close(head.dense.bias, state["roi_head.dense.bias"], rtol=0, atol=0)
    assert report == [
        "head.dense <- roi_head.dense (the masked-RoI head's transform)",
        "head.classifier: new (xavier uniform)",
    ]
    fresh = task.build_head()
    assert "new" in task.init_head(fresh, {"vlbert.x": torch.zeros(1)})[0]
    assert fresh.classifier.bias.abs().sum() == 0
