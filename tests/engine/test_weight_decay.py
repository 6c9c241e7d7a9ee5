"""Weight decay on every parameter (the original's AdamW) or on matrices and tables only, for pretraining and
fine-tuning; one AdamW step checked against the decoupled-decay formula."""

import torch
from torch import nn

from vlbert_fast.config import TrainConfig
from vlbert_fast.config.finetune_run import FinetuneTrainConfig
from vlbert_fast.engine.optim import build_optimizer, param_groups


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.norm = nn.LayerNorm(2)
        self.vector = nn.Parameter(torch.ones(2))
        self.frozen = nn.Parameter(torch.ones(2, 2), requires_grad=False)


def decays(groups: list[dict]) -> dict[int, float]:
    return {id(p): g["weight_decay"] for g in groups for p in g["params"]}


def test_groups_decay_all_or_only_matrices():
    model = Tiny()
    only = decays(param_groups(model, 0.1))
    assert only[id(model.linear.weight)] == 0.1
    assert only[id(model.linear.bias)] == only[id(model.norm.weight)] == only[id(model.vector)] == 0.0
    every = decays(param_groups(model, 0.1, decay_all=True))
    assert set(every.values()) == {0.1} and len(every) == 5
    assert id(model.frozen) not in every  # frozen parameters are not optimised at all
    # the same parameters in the same order either way (checkpoint consolidation reads the fp32 masters in it)
    order = [[id(p) for p in g["params"]] for g in param_groups(model, 0.1)]
    assert order == [[id(p) for p in g["params"]] for g in param_groups(model, 0.1, decay_all=True)]


def test_adamw_step_decays_a_bias_only_when_asked():
    lr, wd = 0.1, 0.5
    for decay_all, want_factor in ((True, 1 - lr * wd), (False, 1.0)):
        model = Tiny()
        with torch.no_grad():
            model.linear.bias.fill_(2.0)
        opt = build_optimizer(model, TrainConfig(lr=lr, weight_decay=wd, weight_decay_all=decay_all))
        for p in model.parameters():
            p.grad = torch.zeros_like(p)  # Adam's update is 0 for a zero gradient: only the decay moves the bias
        opt.step()
        torch.testing.assert_close(model.linear.bias, torch.full((2,), 2.0 * want_factor))


def test_finetune_optimizers_take_the_switch():
    model = Tiny()
    for optimizer in ("adamw", "sgd"):
        cfg = FinetuneTrainConfig(optimizer=optimizer, weight_decay=0.01, weight_decay_all=True)
        groups = build_optimizer(model, cfg).param_groups
        assert {g["weight_decay"] for g in groups if g["params"]} == {0.01}
