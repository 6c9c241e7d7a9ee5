"""AdamW (or SGD) with weight decay on every parameter, as the original, or on matrices and tables only; warmup +
linear decay. Both optimizers skip a step whose loss or gradient is not finite, alike on every rank and under every
ZeRO stage and precision (engine/guards.py).
"""

from __future__ import annotations

import torch
from torch import nn

from ..config.train import LoopConfig
from .guards import gradients_finite


class _SkipSwitch:
    """Mixed in before a torch optimizer: while `skip_update` is set (some rank's loss was not finite), or when the
    step's global gradient norm is not finite, `step()` changes nothing (no parameter, moment or step count moves).
    The loop resets `nonfinite_grad` to None before each engine step; DeepSpeed may call `step()` once per parameter
    group or ZeRO sub-group, and the first call decides for all of them."""

    skip_update: bool = False
    nonfinite_grad: bool | None = None
    norm_source = None
    """The DeepSpeed optimizer that wraps this one (its `_global_grad_norm`), or None (engine/guards.py)."""

    @torch.no_grad()
    def step(self, closure=None):
        if self.skip_update:
            return None
        if self.nonfinite_grad is None:
            self.nonfinite_grad = not gradients_finite(self)
        if self.nonfinite_grad:
            return None
        return super().step(closure)


class SkippableAdamW(_SkipSwitch, torch.optim.AdamW):
    pass


class SkippableSGD(_SkipSwitch, torch.optim.SGD):
    """The original's VCR fine-tuning."""


def param_groups(model: nn.Module, weight_decay: float, decay_all: bool = False) -> list[dict]:
    """Two groups, always in this order: the matrices and embedding tables, then everything of one dimension
    (biases, LayerNorm gains and shifts, the [IMG]/[END]/mask/text-visual vectors). The first decays; the second
    decays too with `decay_all`, as the original's AdamW (common/nlp/bert/optimization.py) applies its weight decay
    to every parameter, and not otherwise (BERT's and Hugging Face's convention). The order is the same either way:
    checkpoint consolidation reads DeepSpeed's fp32 masters in it (model/consolidate.py)."""
    matrices, vectors = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (matrices if p.dim() >= 2 else vectors).append(p)
    return [
        {"params": matrices, "weight_decay": weight_decay},
        {"params": vectors, "weight_decay": weight_decay if decay_all else 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: LoopConfig) -> SkippableAdamW | SkippableSGD:
    """AdamW (fused on the GPU) or SGD with momentum, per `cfg.optimizer`, over the decay groups of `param_groups`."""
    groups = param_groups(model, cfg.weight_decay, cfg.weight_decay_all)
    if cfg.optimizer == "sgd":
        return SkippableSGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    kwargs = {"fused": True} if next(model.parameters()).is_cuda else {}  # one kernel for all parameters on the GPU
    return SkippableAdamW(groups, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps, **kwargs)


def lr_multiplier(step: int, cfg: LoopConfig, max_steps: int, steps_per_epoch: int = 0) -> float:
    """Multiplier of the peak lr at `step`: 0 -> 1 over the warmup, then for the "linear" schedule 1 -> 0 at
    `max_steps` (the original's 'triangle' schedule, WarmupLinearSchedule), for "step" x lr_step_factor at the start of
    each epoch in lr_step_epochs (`steps_per_epoch` optimizer steps each; the original's step schedule)."""
    if step < cfg.warmup_steps:
        return step / cfg.warmup_steps
    if cfg.schedule == "step":
        return cfg.lr_step_factor ** sum(step >= epoch * steps_per_epoch for epoch in cfg.lr_step_epochs)
    return max(0.0, (max_steps - step) / max(1, max_steps - cfg.warmup_steps))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: LoopConfig, max_steps: int, steps_per_epoch: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """The lr schedule of `cfg` (`lr_multiplier`), stepped by the loop after every optimizer step."""
    if cfg.schedule == "step" and steps_per_epoch < 1:
        raise ValueError("the 'step' schedule needs the steps of an epoch")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, cfg, max_steps, steps_per_epoch)
    )
