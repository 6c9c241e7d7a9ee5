"""Bias + GELU as one op: the feed-forward up projection's epilogue.

    bias_gelu(x, bias, backend="auto") -> [N, I]

    y = GELU(x + bias),   GELU(z) = z * (1 + erf(z / sqrt(2))) / 2   (BERT's exact erf form)

x is a projection's output without its bias ([N, I]), `bias` its bias ([I]). Precision: computed in fp32 (fp64 for
fp64 inputs, reference only), rounded once to x's dtype; gradients come back in each input's dtype.

Backends: `triton` (kernels/gelu.py) and `reference` (plain PyTorch, the specification), behind the custom op
`torch.ops.vlbert_fast.bias_gelu` (ops/library.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .dispatch import Backend, Op, interpreted, register, triton_reasons
from .library import unaliased, use_custom_op, vjp


def bias_gelu_reference(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:  # [N, I] in x's dtype
    """Plain PyTorch, the specification (module docstring)."""
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    return F.gelu(x.to(compute) + bias.to(compute)).to(x.dtype)


def _check_inputs(x: torch.Tensor, bias: torch.Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"x: expected shape [N, I], found {tuple(x.shape)}")
    if tuple(bias.shape) != (x.shape[1],):
        raise ValueError(f"bias: expected shape [I] = ({x.shape[1]},), found {tuple(bias.shape)}")
    for name, t in (("x", x), ("bias", bias)):
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating dtype, found {t.dtype}")
    if bias.device != x.device:
        raise ValueError(f"bias: on {bias.device}, but x is on {x.device}; move them to one device")


def _run(backend: str):
    """A backend's differentiable entry: the custom op with that backend (the reference directly in eager mode)."""

    def run(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if not use_custom_op(backend):
            return bias_gelu_reference(x, bias)
        return torch.ops.vlbert_fast.bias_gelu(x, bias, backend)

    return run


GELU = register(
    Op(
        "bias_gelu",
        [
            Backend(
                "triton",
                _run("triton"),
                lambda x, bias: triton_reasons({"x": x, "bias": bias}),
                auto_skip=lambda x, bias: interpreted(x.device),
            ),
            Backend("reference", _run("reference"), lambda *a, **k: []),
        ],
    )
)


# ---------------------------------------------------------------------------------------------------------------------
# the custom ops (ops/library.py): vlbert_fast::bias_gelu and its backward


@torch.library.custom_op("vlbert_fast::bias_gelu", mutates_args=())
def _bias_gelu_op(x: torch.Tensor, bias: torch.Tensor, backend: str) -> torch.Tensor:
    if backend == "triton":
        from ..kernels.gelu import bias_gelu_forward

        return bias_gelu_forward(x, bias)
    return bias_gelu_reference(x, bias).contiguous()


@_bias_gelu_op.register_fake
def _(x, bias, backend):
    return x.new_empty(x.shape)


@torch.library.custom_op("vlbert_fast::bias_gelu_backward", mutates_args=())
def _bias_gelu_backward_op(
    grad_y: torch.Tensor, x: torch.Tensor, bias: torch.Tensor, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    if backend == "triton":
        from ..kernels.gelu import bias_gelu_backward

        grad_x, grad_bias = bias_gelu_backward(grad_y, x, bias)
        return grad_x, grad_bias.to(bias.dtype)
    grad_x, grad_bias = vjp(bias_gelu_reference, [x, bias], grad_y)
    return unaliased((grad_x.contiguous(), grad_bias), (grad_y, x, bias))


@_bias_gelu_backward_op.register_fake
def _(grad_y, x, bias, backend):
    return x.new_empty(x.shape), bias.new_empty(bias.shape)


def _setup(ctx, inputs, output):
    x, bias, backend = inputs
    ctx.save_for_backward(x, bias)
    ctx.backend = backend


def _backward(ctx, grad_y):
    x, bias = ctx.saved_tensors
    grad_x, grad_bias = _bias_gelu_backward_op(grad_y, x, bias, ctx.backend)
    return grad_x, grad_bias, None


_bias_gelu_op.register_autograd(_backward, setup_context=_setup)


def bias_gelu(x: torch.Tensor, bias: torch.Tensor, backend: str = "auto") -> torch.Tensor:  # [N, I]
    """GELU(x + bias) (module docstring); `backend` picks the implementation."""
    _check_inputs(x, bias)
    return GELU(x, bias, backend=backend)
