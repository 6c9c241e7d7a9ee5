"""The post-LN transformer's residual step as one op: bias, dropout, residual add and LayerNorm.

    bias_dropout_residual_layer_norm(x, bias, residual, weight, ln_bias, eps=1e-12, dropout_p=0.0,
                                     seed=None, offset=0, backend="auto") -> [N, H]

    y = LayerNorm(residual + Dropout(x + bias)) * weight + ln_bias

x is a projection's output without its bias ([N, H]), `bias` that projection's bias ([H], or None), `residual` the
sublayer's input ([N, H]); `weight` and `ln_bias` are the LayerNorm's parameters. BERT's post-LN layer applies this
twice: after the attention output projection and after the feed-forward down projection.

Precision: everything is computed in fp32 (fp64 for fp64 inputs, reference only) and the result is rounded once to
x's dtype. Gradients come back in each input's dtype.

Dropout (inverted, scale 1/(1-p)) is the fused embedding's (ops/dropout.py): element (n, h) is kept when
`philox_uniform(seed, offset + n * H + h) >= p`, the draw of Triton's tl.rand, so both backends draw the same mask
for a seed. With seed=None a seed is drawn from torch's CPU generator (`torch.manual_seed` governs it).

Backends: `triton` (kernels/layer_norm.py) and `reference` (plain PyTorch, the specification).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .dispatch import Backend, Op, interpreted, register, triton_reasons
from .dropout import MAX_COUNTER, dropout_counters, philox_uniform


def layer_norm_seed(seed: int | None, dropout_p: float) -> int:
    """The given seed, or (with dropout) a fresh one from torch's CPU generator."""
    if dropout_p == 0:
        return 0
    return int(torch.randint(0, 2**62, ())) if seed is None else int(seed)


def bias_dropout_residual_layer_norm_reference(
    x: torch.Tensor,  # [N, H]
    bias: torch.Tensor | None,  # [H]
    residual: torch.Tensor,  # [N, H]
    weight: torch.Tensor,  # [H]
    ln_bias: torch.Tensor,  # [H]
    eps: float = 1e-12,
    dropout_p: float = 0.0,
    seed: int | None = None,
    offset: int = 0,
) -> torch.Tensor:  # [N, H] in x's dtype
    """Plain PyTorch, the specification (module docstring)."""
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    n, hidden = x.shape
    h = x.to(compute) if bias is None else x.to(compute) + bias.to(compute)
    if dropout_p > 0:
        keep = philox_uniform(layer_norm_seed(seed, dropout_p), dropout_counters(offset, n, hidden, x.device))
        h = torch.where(keep >= dropout_p, h * (1.0 / (1.0 - dropout_p)), 0.0)
    s = residual.to(compute) + h
    return F.layer_norm(s, (hidden,), weight.to(compute), ln_bias.to(compute), eps).to(x.dtype)


def _check_inputs(x, bias, residual, weight, ln_bias, eps, dropout_p, seed, offset) -> None:
    if x.dim() != 2:
        raise ValueError(f"x: expected shape [N, H], found {tuple(x.shape)}")
    hidden = x.shape[1]
    if residual.shape != x.shape:
        raise ValueError(f"residual: expected the shape of x {tuple(x.shape)}, found {tuple(residual.shape)}")
    for name, t in (("bias", bias), ("weight", weight), ("ln_bias", ln_bias)):
        if t is not None and tuple(t.shape) != (hidden,):
            raise ValueError(f"{name}: expected shape [H] = ({hidden},), found {tuple(t.shape)}")
    for name, t in (("x", x), ("bias", bias), ("residual", residual), ("weight", weight), ("ln_bias", ln_bias)):
        if t is None:
            continue
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating dtype, found {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name}: on {t.device}, but x is on {x.device}; move them to one device")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p: expected a probability in [0, 1), found {dropout_p}")
    if eps <= 0:
        raise ValueError(f"eps: expected a positive number, found {eps}")
    if seed is not None and not 0 <= seed < 2**63:
        raise ValueError(f"seed: expected an integer in [0, 2**63) or None, found {seed}")
    if dropout_p > 0 and not (0 <= offset and offset + x.numel() <= MAX_COUNTER):
        raise ValueError(f"offset: dropout counters offset + N*H = {offset} + {x.numel()} must lie in [0, 2**31]")


def _tensors(x, bias, residual, weight, ln_bias, *args, **kwargs) -> dict:
    return {"x": x, "bias": bias, "residual": residual, "weight": weight, "ln_bias": ln_bias}


def _triton_reasons(*args, **kwargs) -> list[str]:
    reasons = triton_reasons(_tensors(*args))
    hidden = args[0].shape[1]
    if not reasons:
        from ..kernels.utils import MAX_FUSED_HIDDEN

        if hidden > MAX_FUSED_HIDDEN:
            reasons.append(f"x: hidden size {hidden} is above the fused kernel's maximum {MAX_FUSED_HIDDEN}")
    return reasons


def _run_triton(x, bias, residual, weight, ln_bias, eps=1e-12, dropout_p=0.0, seed=None, offset=0):
    from ..kernels.layer_norm import BiasDropoutResidualLayerNormFunction

    seed = layer_norm_seed(seed, dropout_p)
    return BiasDropoutResidualLayerNormFunction.apply(
        x, bias, residual, weight, ln_bias, float(eps), float(dropout_p), seed, int(offset)
    )


LAYER_NORM = register(
    Op(
        "bias_dropout_residual_layer_norm",
        [
            Backend("triton", _run_triton, _triton_reasons, auto_skip=lambda x, *a, **k: interpreted(x.device)),
            Backend("reference", bias_dropout_residual_layer_norm_reference, lambda *a, **k: []),
        ],
    )
)


def bias_dropout_residual_layer_norm(
    x: torch.Tensor,  # [N, H]
    bias: torch.Tensor | None,  # [H]
    residual: torch.Tensor,  # [N, H]
    weight: torch.Tensor,  # [H]
    ln_bias: torch.Tensor,  # [H]
    eps: float = 1e-12,
    dropout_p: float = 0.0,
    seed: int | None = None,
    offset: int = 0,
    backend: str = "auto",
) -> torch.Tensor:  # [N, H]
    """LayerNorm(residual + Dropout(x + bias)) (module docstring); `backend` picks the implementation."""
    _check_inputs(x, bias, residual, weight, ln_bias, eps, dropout_p, seed, offset)
    return LAYER_NORM(x, bias, residual, weight, ln_bias, eps, dropout_p, seed, offset, backend=backend)
