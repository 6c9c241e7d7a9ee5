"""Bias + GELU as one op: the feed-forward up projection's epilogue.

    bias_gelu(x, bias, backend="auto") -> [N, I]

    y = GELU(x + bias),   GELU(z) = z * (1 + erf(z / sqrt(2))) / 2   (BERT's exact erf form)

x is a projection's output without its bias ([N, I]), `bias` its bias ([I]). Precision: computed in fp32 (fp64 for
fp64 inputs, reference only), rounded once to x's dtype; gradients come back in each input's dtype.

Backends: `triton` (kernels/gelu.py) and `reference` (plain PyTorch, the specification).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .dispatch import Backend, Op, interpreted, register, triton_reasons


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


def _run_triton(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    from ..kernels.gelu import BiasGeluFunction

    return BiasGeluFunction.apply(x, bias)


GELU = register(
    Op(
        "bias_gelu",
        [
            Backend(
                "triton",
                _run_triton,
                lambda x, bias: triton_reasons({"x": x, "bias": bias}),
                auto_skip=lambda x, bias: interpreted(x.device),
            ),
            Backend("reference", bias_gelu_reference, lambda *a, **k: []),
        ],
    )
)


def bias_gelu(x: torch.Tensor, bias: torch.Tensor, backend: str = "auto") -> torch.Tensor:  # [N, I]
    """GELU(x + bias) (module docstring); `backend` picks the implementation."""
    _check_inputs(x, bias)
    return GELU(x, bias, backend=backend)
