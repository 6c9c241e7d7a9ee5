"""The guards of the training loop: no non-finite number reaches the weights or a checkpoint.

- The loss: a non-finite loss on any rank skips the optimizer step on every rank (one all-reduce per step,
  engine/steps.py, then the optimizer's `skip_update`, engine/optim.py).
- The gradient: the step's global gradient norm must be finite (`gradients_finite`, asked by the optimizer's first
  `step()` of each optimizer step). Under ZeRO and in bf16 DeepSpeed computes that norm over every rank before it
  calls our optimizer; in plain fp32 data parallelism every rank holds the same all-reduced gradients and computes
  it here. Either way every rank decides alike.
- Either skip is logged, counted, and `engine.max_nonfinite_steps` of them in a row abort the run.
- The weights: a checkpoint is saved only when every rank's weights are finite (`nonfinite_weights`,
  engine/checkpoint.py); otherwise the run aborts naming the last finite checkpoint, which `resume: auto` picks.
"""

from __future__ import annotations

import math

import torch


class TrainingAborted(RuntimeError):
    """The run stopped on purpose (too many non-finite steps, non-finite weights) or because another rank failed;
    says which."""


def gradients_finite(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the global gradient norm of this optimizer step is finite (module docstring). `optimizer.norm_source`
    is the DeepSpeed optimizer wrapping it (whose `_global_grad_norm` DeepSpeed sets before calling it), or None
    when DeepSpeed calls it directly with the full gradients."""
    source = getattr(optimizer, "norm_source", None)
    if source is not None:
        norm = getattr(source, "_global_grad_norm", None)
        return norm is None or math.isfinite(float(norm))
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return True
    return bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))


def nonfinite_weights(module: torch.nn.Module) -> list[str]:
    """Names of the parameters whose copy on this rank holds a NaN or an infinity (ZeRO-3: this rank's partition)."""
    names, flags = [], []
    for name, p in module.named_parameters():
        tensor = getattr(p, "ds_tensor", None)
        tensor = p.detach() if tensor is None or p.numel() > 0 else tensor
        if tensor.numel():
            names.append(name)
            flags.append(~torch.isfinite(tensor.detach()).all())
    if not flags:
        return []
    bad = torch.stack(flags).cpu().tolist()  # one synchronisation for all parameters
    return [name for name, b in zip(names, bad, strict=True) if b]
