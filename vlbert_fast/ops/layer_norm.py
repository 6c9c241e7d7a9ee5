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
for a seed. `seed` is an int, a one-element int64 tensor on x's device, or None: a key drawn on x's device from its
generator (`torch.manual_seed` governs it; ops/library.py `dropout_seed`), never read on the host.

Backends: `triton` (kernels/layer_norm.py) and `reference` (plain PyTorch, the specification), behind the custom
op `torch.ops.vlbert_fast.bias_dropout_residual_layer_norm` (ops/library.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .dispatch import Backend, Op, interpreted, register, triton_reasons
from .dropout import MAX_COUNTER, dropout_counters, philox_uniform
from .library import dropout_seed, or_empty, require_key, unaliased, use_custom_op, vjp


def bias_dropout_residual_layer_norm_reference(
    x: torch.Tensor,  # [N, H]
    bias: torch.Tensor | None,  # [H]
    residual: torch.Tensor,  # [N, H]
    weight: torch.Tensor,  # [H]
    ln_bias: torch.Tensor,  # [H]
    eps: float = 1e-12,
    dropout_p: float = 0.0,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor:  # [N, H] in x's dtype
    """Plain PyTorch, the specification (module docstring)."""
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    n, hidden = x.shape
    h = x.to(compute) if bias is None else x.to(compute) + bias.to(compute)
    if dropout_p > 0:
        keep = philox_uniform(dropout_seed(seed, dropout_p, x.device), dropout_counters(offset, n, hidden, x.device))
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


def _run(backend: str):
    """A backend's differentiable entry: the custom op with that backend (the reference directly in eager mode)."""

    def run(x, bias, residual, weight, ln_bias, eps=1e-12, dropout_p=0.0, seed=None, offset=0):
        key = dropout_seed(seed, dropout_p, x.device)
        if not use_custom_op(backend):
            return bias_dropout_residual_layer_norm_reference(x, bias, residual, weight, ln_bias, eps, dropout_p, key,
                                                              offset)  # fmt: skip
        return torch.ops.vlbert_fast.bias_dropout_residual_layer_norm(
            x, bias, residual, weight, ln_bias, float(eps), float(dropout_p), key, int(offset), backend
        )[0]

    return run


LAYER_NORM = register(
    Op(
        "bias_dropout_residual_layer_norm",
        [
            Backend("triton", _run("triton"), _triton_reasons, auto_skip=lambda x, *a, **k: interpreted(x.device)),
            Backend("reference", _run("reference"), lambda *a, **k: []),
        ],
    )
)


# ---------------------------------------------------------------------------------------------------------------------
# the custom ops (ops/library.py): vlbert_fast::bias_dropout_residual_layer_norm and its backward. The forward
# returns (y, s, mean, rstd); the statistics are the Triton backward's and empty for the reference.


@torch.library.custom_op("vlbert_fast::bias_dropout_residual_layer_norm", mutates_args=())
def _layer_norm_op(
    x: torch.Tensor,
    bias: torch.Tensor | None,
    residual: torch.Tensor,
    weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    dropout_p: float,
    seed: torch.Tensor | None,
    offset: int,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    key = require_key(seed, dropout_p)
    if backend == "triton":
        from ..kernels.layer_norm import layer_norm_forward

        return layer_norm_forward(x, bias, residual, weight, ln_bias, eps, dropout_p, key, offset)
    y = bias_dropout_residual_layer_norm_reference(x, bias, residual, weight, ln_bias, eps, dropout_p, key, offset)
    empty = x.new_empty(0, dtype=torch.float32)
    return y.contiguous(), x.new_empty(0), empty, empty.clone()


@_layer_norm_op.register_fake
def _(x, bias, residual, weight, ln_bias, eps, dropout_p, seed, offset, backend):
    if backend == "triton":
        n = x.shape[0]
        return (
            x.new_empty(x.shape),
            x.new_empty(x.shape),
            x.new_empty(n, dtype=torch.float32),
            x.new_empty(n, dtype=torch.float32),
        )
    return (
        x.new_empty(x.shape),
        x.new_empty(0),
        x.new_empty(0, dtype=torch.float32),
        x.new_empty(0, dtype=torch.float32),
    )


@torch.library.custom_op("vlbert_fast::bias_dropout_residual_layer_norm_backward", mutates_args=())
def _layer_norm_backward_op(
    grad_y: torch.Tensor,
    x: torch.Tensor | None,  # the reference's (recomputed); None for triton
    bias: torch.Tensor | None,
    residual: torch.Tensor,
    weight: torch.Tensor,
    ln_bias: torch.Tensor,
    s: torch.Tensor,  # the triton statistics (empty for the reference)
    mean: torch.Tensor,
    rstd: torch.Tensor,
    eps: float,
    dropout_p: float,
    seed: torch.Tensor | None,
    offset: int,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of (x, bias, residual, weight, ln_bias), each in its input's dtype; bias's is empty without a bias."""
    key = require_key(seed, dropout_p)
    if backend == "triton":
        from ..kernels.layer_norm import layer_norm_backward

        grad_x, grad_residual, grad_weight, grad_ln_bias, grad_bias = layer_norm_backward(
            grad_y, s, mean, rstd, weight, residual.dtype, float(dropout_p), key, int(offset)
        )
        grad_bias = grad_bias.to(bias.dtype) if bias is not None else None
        grads = (grad_x, grad_bias, grad_residual, grad_weight.to(weight.dtype), grad_ln_bias.to(ln_bias.dtype))
    else:
        grads = vjp(bias_dropout_residual_layer_norm_reference, [x, bias, residual, weight, ln_bias], grad_y, eps,
                    dropout_p, key, offset)  # fmt: skip
        grads = [g.contiguous() if g is not None else None for g in grads]
    grad_x, grad_bias, grad_residual, grad_weight, grad_ln_bias = grads
    outputs = (grad_x, or_empty(grad_bias, grad_y), grad_residual, grad_weight, grad_ln_bias)
    return unaliased(outputs, (grad_y, x, bias, residual, weight, ln_bias, s, mean, rstd))


@_layer_norm_backward_op.register_fake
def _(grad_y, x, bias, residual, weight, ln_bias, s, mean, rstd, eps, dropout_p, seed, offset, backend):
    grad_bias = bias.new_empty(bias.shape) if bias is not None else grad_y.new_empty(0)
    return (grad_y.new_empty(grad_y.shape), grad_bias, residual.new_empty(residual.shape),
            weight.new_empty(weight.shape), ln_bias.new_empty(ln_bias.shape))  # fmt: skip


def _setup(ctx, inputs, output):
    x, bias, residual, weight, ln_bias, eps, dropout_p, seed, offset, backend = inputs
    _, s, mean, rstd = output
    # triton needs the statistics (and residual only for its dtype: the layer keeps it alive anyway); the reference
    # recomputes from the inputs
    saved_x = None if backend == "triton" else x
    ctx.save_for_backward(saved_x, bias, residual, weight, ln_bias, s, mean, rstd, seed)
    ctx.args = (eps, dropout_p, offset, backend)


def _backward(ctx, grad_y, *_):
    x, bias, residual, weight, ln_bias, s, mean, rstd, seed = ctx.saved_tensors
    eps, dropout_p, offset, backend = ctx.args
    grad_x, grad_bias, grad_residual, grad_weight, grad_ln_bias = _layer_norm_backward_op(
        grad_y, x, bias, residual, weight, ln_bias, s, mean, rstd, eps, dropout_p, seed, offset, backend
    )
    grad_bias = grad_bias if bias is not None else None
    return grad_x, grad_bias, grad_residual, grad_weight, grad_ln_bias, None, None, None, None, None


_layer_norm_op.register_autograd(_backward, setup_context=_setup)


def bias_dropout_residual_layer_norm(
    x: torch.Tensor,  # [N, H]
    bias: torch.Tensor | None,  # [H]
    residual: torch.Tensor,  # [N, H]
    weight: torch.Tensor,  # [H]
    ln_bias: torch.Tensor,  # [H]
    eps: float = 1e-12,
    dropout_p: float = 0.0,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str = "auto",
) -> torch.Tensor:  # [N, H]
    """LayerNorm(residual + Dropout(x + bias)) (module docstring); `backend` picks the implementation."""
    _check_inputs(x, bias, residual, weight, ln_bias, eps, dropout_p, seed, offset)
    return LAYER_NORM(x, bias, residual, weight, ln_bias, eps, dropout_p, seed, offset, backend=backend)
