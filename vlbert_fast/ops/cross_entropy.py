"""A linear layer and the cross-entropy on its output as one op, in chunks of rows: the [M, V] logits of the MLM
decoder (V = 30522 for BERT) are never materialised at once.

    linear_cross_entropy(x, weight, bias, labels, ignore_index=-100, chunk_size=None, backend="auto") -> scalar

    loss = mean over rows m with labels[m] != ignore_index of  logsumexp(z_m) - z_m[labels[m]],
    z = x weight^T + bias                                                 (F.cross_entropy(F.linear(...)))

x [M, H], weight [V, H] (the MLM head ties it to the word embeddings), bias [V] or None, labels [M] int64 in
[0, V) or ignore_index. With every label ignored the mean is 0/0 = NaN, as F.cross_entropy gives.

Precision: logits are computed in x's dtype (the matmul accumulates in fp32, as the unfused head does), then read in
fp32: log-sum-exp, loss and softmax in fp32. The loss is fp32.

Chunked backends compute the gradients during the forward, chunk by chunk, while the chunk's logits are at hand
(Liger-Kernel's fused linear cross-entropy): softmax - one_hot overwrites the chunk's logits in place, then
dx = dz weight, dweight += dz^T x (fp32), dbias += column sums of dz; the backward only scales them by the incoming
gradient. Peak extra memory: one chunk of logits plus the fp32 weight gradient. Without autograd (no_grad, or no
input requiring a gradient) only the loss is computed.

Backends: `triton` (kernels/cross_entropy.py: the per-row loss and gradient in one Triton kernel, matmuls by
cuBLAS), `chunked` (the same loop with the per-row step in PyTorch: the fused path on machines without Triton) and
`reference` (F.linear + F.cross_entropy, unfused: the specification).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .dispatch import Backend, Op, interpreted, register, triton_reasons


def linear_cross_entropy_reference(
    x: torch.Tensor,  # [M, H]
    weight: torch.Tensor,  # [V, H]
    bias: torch.Tensor | None,  # [V]
    labels: torch.Tensor,  # [M] int64
    ignore_index: int = -100,
    chunk_size: int | None = None,
) -> torch.Tensor:  # [] fp32
    """Plain PyTorch, unfused: the specification (module docstring). `chunk_size` is accepted and unused."""
    return F.cross_entropy(F.linear(x, weight, bias).float(), labels, ignore_index=ignore_index)


def default_chunk_size(rows: int, hidden: int, vocab: int) -> int:
    """Rows per chunk so that a chunk of logits is about as large as x itself (Liger's rule): the memory the head
    needs stays that of its input, whatever the vocabulary; a power of two for the matmuls' tiles."""
    chunks = max(1, -(-vocab // max(hidden, 1)))
    per_chunk = -(-max(rows, 1) // chunks)
    return 1 << (per_chunk - 1).bit_length()


def cross_entropy_rows_torch(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """The per-row step of the `chunked` backend: returns each row's loss (fp32, 0 where ignored) and overwrites
    `logits` [C, V] with d loss_row / d logits = softmax - one_hot (0 on ignored rows)."""
    z = logits.float()
    valid = labels != ignore_index
    target = labels.clamp(min=0)
    lse = torch.logsumexp(z, dim=-1)
    losses = torch.where(valid, lse - z.gather(1, target[:, None])[:, 0], 0.0)
    grad = torch.exp(z - lse[:, None])
    grad.scatter_add_(1, target[:, None], torch.full_like(lse[:, None], -1.0))
    logits.copy_(grad * valid[:, None])
    return losses


def chunked_linear_cross_entropy(x, weight, bias, labels, ignore_index, chunk_size, rows_step, need_grads):
    """The loop both chunked backends share: (loss, grad_x, grad_weight fp32, grad_bias fp32 or None), gradients
    of the mean loss, or (loss, None, None, None) without `need_grads`."""
    rows, hidden = x.shape
    chunk = chunk_size or default_chunk_size(rows, hidden, weight.shape[0])
    losses = torch.zeros(rows, dtype=torch.float32, device=x.device)
    grad_x = torch.empty_like(x) if need_grads else None
    grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=x.device) if need_grads else None
    grad_bias = None
    if need_grads and bias is not None:
        grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=x.device)
    for start in range(0, rows, chunk):
        x_c = x[start : start + chunk]
        logits = F.linear(x_c, weight, bias)  # [C, V]: the only vocabulary-wide buffer
        losses[start : start + chunk] = rows_step(logits, labels[start : start + chunk], ignore_index)
        if need_grads:
            grad_x[start : start + chunk] = logits @ weight.to(logits.dtype)
            grad_weight += (logits.t() @ x_c.to(logits.dtype)).float()
            if grad_bias is not None:
                grad_bias += logits.float().sum(0)
    count = (labels != ignore_index).sum()
    loss = losses.sum() / count  # 0/0 = NaN when every label is ignored, as F.cross_entropy
    if need_grads:
        scale = 1.0 / count.clamp(min=1).float()
        grad_x = (grad_x.float() * scale).to(x.dtype)
        grad_weight = grad_weight * scale
        grad_bias = grad_bias * scale if grad_bias is not None else None
    return loss, grad_x, grad_weight, grad_bias


class LinearCrossEntropyFunction(torch.autograd.Function):
    """(x, weight, bias, labels, ignore_index, chunk_size, rows_step) -> loss. The gradients are computed in the
    forward (module docstring); the backward scales them by the incoming gradient."""

    @staticmethod
    def forward(ctx, x, weight, bias, labels, ignore_index, chunk_size, rows_step):
        loss, grad_x, grad_weight, grad_bias = chunked_linear_cross_entropy(
            x, weight, bias, labels, ignore_index, chunk_size, rows_step, need_grads=True
        )
        ctx.save_for_backward(grad_x, grad_weight, grad_bias)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_weight, grad_bias = ctx.saved_tensors
        weight_dtype, bias_dtype = ctx.dtypes
        g = grad_loss.float()
        grad_bias = None if bias_dtype is None else (grad_bias * g).to(bias_dtype)
        return (grad_x * g).to(grad_x.dtype), (grad_weight * g).to(weight_dtype), grad_bias, None, None, None, None


def _run_chunked(x, weight, bias, labels, ignore_index=-100, chunk_size=None, rows_step=cross_entropy_rows_torch):
    grads = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    if not grads:
        return chunked_linear_cross_entropy(x, weight, bias, labels, ignore_index, chunk_size, rows_step, False)[0]
    return LinearCrossEntropyFunction.apply(x, weight, bias, labels, ignore_index, chunk_size, rows_step)


def _run_triton(x, weight, bias, labels, ignore_index=-100, chunk_size=None):
    from ..kernels.cross_entropy import cross_entropy_rows

    return _run_chunked(x, weight, bias, labels, ignore_index, chunk_size, rows_step=cross_entropy_rows)


def _check_inputs(x, weight, bias, labels, ignore_index, chunk_size) -> None:
    if x.dim() != 2:
        raise ValueError(f"x: expected shape [M, H], found {tuple(x.shape)}")
    if weight.dim() != 2 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight: expected shape [V, H] with H = {x.shape[1]}, found {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias: expected shape [V] = ({weight.shape[0]},), found {tuple(bias.shape)}")
    if labels.shape != x.shape[:1] or labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"labels: expected an int64 tensor of shape [M] = ({x.shape[0]},), found {labels.dtype} "
            f"{tuple(labels.shape)}"
        )
    for name, t in (("x", x), ("weight", weight), ("bias", bias), ("labels", labels)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name}: on {t.device}, but x is on {x.device}; move them to one device")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != x.dtype:
            raise TypeError(f"{name}: dtype {t.dtype} differs from x's {x.dtype}; cast them to one dtype")
    if chunk_size is not None and chunk_size <= 0:
        raise ValueError(f"chunk_size: expected a positive number of rows or None, found {chunk_size}")
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= weight.shape[0]))
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"labels: {int(labels[i])} at row {i} is outside [0, {weight.shape[0]}) and is not ignore_index "
            f"({ignore_index})"
        )


CROSS_ENTROPY = register(
    Op(
        "linear_cross_entropy",
        [
            Backend(
                "triton",
                _run_triton,
                lambda x, weight, bias, labels, *a, **k: triton_reasons({"x": x, "weight": weight, "bias": bias}),
                auto_skip=lambda x, *a, **k: interpreted(x.device),
            ),
            Backend("chunked", _run_chunked, lambda *a, **k: []),
            Backend("reference", linear_cross_entropy_reference, lambda *a, **k: []),
        ],
    )
)


def linear_cross_entropy(
    x: torch.Tensor,  # [M, H]
    weight: torch.Tensor,  # [V, H]
    bias: torch.Tensor | None,  # [V]
    labels: torch.Tensor,  # [M] int
    ignore_index: int = -100,
    chunk_size: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:  # [] fp32
    """Mean cross-entropy of x weight^T + bias against labels (module docstring); `backend` picks the
    implementation."""
    _check_inputs(x, weight, bias, labels, ignore_index, chunk_size)
    return CROSS_ENTROPY(x, weight, bias, labels.long(), ignore_index, chunk_size, backend=backend)
