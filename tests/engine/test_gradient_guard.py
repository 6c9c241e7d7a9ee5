"""The optimizer's gradient guard without DeepSpeed around it: a step whose gradients hold a NaN or an infinity
changes nothing (no parameter, moment or step count moves), and the decision, made at the step's first call, holds for
the later calls of the same step (DeepSpeed calls the optimizer once per parameter group or ZeRO sub-group)."""

import math

import torch

from vlbert_fast.engine.guards import gradients_finite
from vlbert_fast.engine.optim import SkippableAdamW


class Wrapper:
    """Stands where DeepSpeed's ZeRO/bf16 optimizer stands: it has computed the step's global norm."""

    _global_grad_norm = math.inf


def model_and_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = SkippableAdamW([{"params": [model.weight]}, {"params": [model.bias]}], lr=0.1)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()  # one good step: moments and step counts exist
    opt.nonfinite_grad = None
    return model, opt


def snapshot(model, opt):
    return [p.detach().clone() for p in model.parameters()], [
        {k: v.clone() for k, v in s.items()} for s in opt.state.values()
    ]


def test_a_nonfinite_gradient_changes_nothing():
    model, opt = model_and_optimizer()
    model(torch.randn(5, 4)).sum().backward()
    model.bias.grad[1] = float("nan")
    before = snapshot(model, opt)
    opt.step()
    assert opt.nonfinite_grad is True
    after = snapshot(model, opt)
    assert all(torch.equal(a, b) for a, b in zip(before[0], after[0], strict=True))
    assert all(torch.equal(a[k], b[k]) for a, b in zip(before[1], after[1], strict=True) for k in a)
    opt.nonfinite_grad = None  # the next step decides afresh
    model.bias.grad.zero_()
    opt.step()
    assert opt.nonfinite_grad is False and not torch.equal(before[0][0], model.weight)


def test_the_first_call_of_a_step_decides_for_its_other_calls():
    model, opt = model_and_optimizer()
    model(torch.randn(5, 4)).sum().backward()
    opt.norm_source = Wrapper()  # DeepSpeed's global norm over every rank's partition: infinite
    groups = opt.param_groups
    weight = model.weight.detach().clone()
    for group in groups:  # as DeepSpeed's ZeRO-1/2 calls the inner optimizer: one parameter group at a time
        opt.param_groups = [group]
        opt.step()
    opt.param_groups = groups
    assert opt.nonfinite_grad is True and torch.equal(weight, model.weight)
    assert not gradients_finite(opt)
    opt.norm_source._global_grad_norm = 2.5
    assert gradients_finite(opt)
