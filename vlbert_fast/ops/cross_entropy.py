"""A linear layer and the cross-entropy on its output as one op, in chunks of rows when the [M, V] logits of the
MLM decoder (V = 30522 for BERT) would outgrow a memory budget.

    linear_cross_entropy(x, weight, bias, labels, ignore_index=-100, chunk_size=None, backend="auto") -> scalar

    loss = mean over rows m with labels[m] != ignore_index of  logsumexp(z_m) - z_m[labels[m]],
    z = x weight^T + bias                                                 (F.cross_entropy(F.linear(...)))

x [M, H], weight [V, H] (the MLM head ties it to the word embeddings), bias [V] or None, labels [M] int64 in
[0, V) or ignore_index (checked only in debug mode, VLBERT_FAST_DEBUG_CHECKS=1: reading labels is a host sync on a
GPU; ops/library.py). With every label ignored the mean is 0/0 = NaN, as F.cross_entropy gives.

Precision: logits are computed in x's dtype (the matmul accumulates in fp32, as the unfused head does), then read in
fp32: log-sum-exp, loss and softmax in fp32. The loss is fp32.

Chunked backends compute the gradients during the forward, chunk by chunk, while the chunk's logits are at hand
(Liger-Kernel's fused linear cross-entropy): softmax - one_hot overwrites the chunk's logits in place, then
dx = dz weight, dweight += dz^T x (fp32), dbias += column sums of dz; the backward only scales them by the incoming
gradient. Peak extra memory: one chunk of logits plus the fp32 weight gradient. Without autograd (no_grad, or no
input requiring a gradient) only the loss is computed.

Chunks (`default_chunk_size`, the same rule for every backend): all rows at once while their logits fit
`LOGITS_BUDGET_BYTES` (256 MiB), else the fewest equal chunks that fit, none below `MIN_CHUNK_ROWS` (256): each chunk
stays a real matrix product, since every chunk reads the whole decoder three times whatever its rows.

Backends: `triton` (kernels/cross_entropy.py: the per-row loss and gradient in one Triton kernel, matmuls by
cuBLAS), `chunked` (the same loop with the per-row step in PyTorch: the fused path on machines without Triton) and
`reference` (F.linear + F.cross_entropy, unfused: the specification), behind the custom op
`torch.ops.vlbert_fast.linear_cross_entropy` (ops/library.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .dispatch import Backend, Op, interpreted, register, triton_reasons
from .library import debug_checks, or_empty, unaliased, use_custom_op, vjp


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


LOGITS_BUDGET_BYTES = 256 * 2**20
"""The logits the loop may hold at once, counted at 4 bytes per element (the row step's fp32 work): 2199 rows of
BERT's 30522-word vocabulary, more than the 1499 masked words of a Base step of 256 rows of 64 tokens
(benchmarks/bench_step.py's batch), so the original's batch per GPU never chunks."""

MIN_CHUNK_ROWS = 256
"""No chunk is smaller (unless the rows are fewer): below this the three matmuls of a chunk read the whole decoder
for little work and turn memory-bound (default_chunk_size's docstring has the figures)."""


def default_chunk_size(rows: int, hidden: int, vocab: int) -> int:
    """Rows per chunk: all of them while their logits fit `LOGITS_BUDGET_BYTES`, else the fewest chunks that fit,
    of equal size rounded up to 16 rows, never fewer than `MIN_CHUNK_ROWS` rows (the last chunk takes the rest).
    `hidden` does not enter: each chunk reads the [V, H] decoder three times (logits, dx, dweight) and updates the
    weight gradient, whatever H, so what a chunk costs beyond its matmuls is fixed; only the count of chunks matters.

    The figures that decided it (fwd + bwd at H = 768, V = 30522, fp32, 2 CPU threads; a 2-core machine shared with
    other work, so read them as ratios): for the 42 masked rows of 8 rows of 69 tokens, the old rule (Liger's:
    a chunk of logits about as large as x, 2-row chunks here) took 16.7 s, 64-row chunks 2.0 s, one chunk 0.76 s;
    the three matmuls of one chunk cost 46 ms per row at 8 rows, 9-10 ms per row at 32-64 rows and 3-4 ms per row
    from 256 rows on (benchmarks/results/cpu_step.md has the step). On an H100 in bf16 a chunk streams the 47 MB
    decoder three times (about 50 us at 3 TB/s) for 6 * C * V * H flops (about C * 0.18 us at 800 TFLOP/s): chunks
    of fewer than about 300 rows are bound by that stream, so the same floor serves the GPU. Memory is then the
    only reason to chunk: a Base batch of 256 rows of 64 tokens masks 1499 words (183 MB of fp32 logits, one
    chunk); 512 rows take two chunks."""
    rows = max(rows, 1)
    fit = max(MIN_CHUNK_ROWS, LOGITS_BUDGET_BYTES // (4 * max(vocab, 1)))
    if rows <= fit:
        return rows
    chunks = -(-rows // fit)
    per_chunk = -(-rows // chunks)
    per_chunk = -(-per_chunk // 16) * 16
    return max(per_chunk, MIN_CHUNK_ROWS)  # the floor binds only where fit is the floor: chunks of it, then the rest


def cross_entropy_rows_torch(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """The per-row step of the `chunked` backend: returns each row's loss (fp32, 0 where ignored) and overwrites
    `logits` [C, V] with d loss_row / d logits = softmax - one_hot (0 on ignored rows)."""
    valid = labels != ignore_index
    target = labels.clamp(min=0)[:, None]
    log_probs = torch.log_softmax(logits, dim=-1, dtype=torch.float32)  # one pass for max, sum and the log
    losses = torch.where(valid, -log_probs.gather(1, target)[:, 0], 0.0)
    grad = log_probs.exp_()  # softmax, in place of the log-probabilities
    grad.scatter_add_(1, target, torch.full_like(grad[:, :1], -1.0))
    grad.mul_(valid[:, None])
    logits.copy_(grad)
    return losses


LOGITS_ROW_ALIGN = 16
"""A chunk's logits are a [C, V] view of a [C, V rounded up to 16] buffer, so every row starts on a 16-element (32- or
64-byte) boundary: a 30522-wide row is otherwise 4-byte aligned at best in bf16, and the Triton row kernel would load
and store 2 bytes at a time instead of 16 (benchmarks/results/sm90_static.md, ld128_share). The padding columns are
scratch that the row kernel may read and zero; the matmuls see only the view (cuBLAS takes the row stride as its
leading dimension, no copy)."""


def linear_padded(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear(x, weight, bias) [C, V], written into a buffer whose rows are padded to LOGITS_ROW_ALIGN elements.
    Under autocast, plain F.linear (autocast picks the dtype; an out= product would not follow it)."""
    if torch.is_autocast_enabled(x.device.type):
        return F.linear(x, weight, bias)
    vocab = weight.shape[0]
    padded = -(-vocab // LOGITS_ROW_ALIGN) * LOGITS_ROW_ALIGN
    out = torch.empty(x.shape[0], padded, dtype=x.dtype, device=x.device)[:, :vocab]
    if bias is None:
        return torch.mm(x, weight.t(), out=out)
    return torch.addmm(bias, x, weight.t(), out=out)


def chunked_linear_cross_entropy(x, weight, bias, labels, ignore_index, chunk_size, rows_step, need_grads):
    """The loop both chunked backends share: (loss, grad_x, grad_weight, grad_bias or None), gradients of the mean
    loss, or (loss, None, None, None) without `need_grads`. The weight and bias gradients are accumulated in fp32
    (in x's dtype for fp32 and fp64); in fp32 and fp64 the 1/count of the mean scales the logits gradient before the
    matmuls, and the weight gradient accumulates in place (addmm_): no pass over [V, H] beyond the matmuls."""
    rows, hidden = x.shape
    chunk = chunk_size or default_chunk_size(rows, hidden, weight.shape[0])
    count = (labels != ignore_index).sum()
    losses = torch.empty(rows, dtype=torch.float32, device=x.device)
    acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    fold = x.dtype == acc  # low precision: scale after the matmuls, so the logits gradient is rounded only once
    scale = 1.0 / count.clamp(min=1).to(acc)
    grad_x = torch.empty_like(x) if need_grads else None
    grad_weight = grad_bias = None
    for start in range(0, rows, chunk):
        rows_c = slice(start, start + chunk)
        x_c = x[rows_c]
        logits = linear_padded(x_c, weight, bias)  # [C, V]: the only vocabulary-wide buffer
        losses[rows_c] = rows_step(logits, labels[rows_c], ignore_index)
        if not need_grads:
            continue
        if fold:
            logits.mul_(scale)
        torch.mm(logits, weight, out=grad_x[rows_c])
        if grad_weight is None:
            grad_weight = (logits.t() @ x_c).to(acc)
            grad_bias = None if bias is None else logits.sum(0, dtype=acc)
        else:
            if fold:
                grad_weight.addmm_(logits.t(), x_c)
            else:
                grad_weight += (logits.t() @ x_c).to(acc)
            if grad_bias is not None:
                grad_bias += logits.sum(0, dtype=acc)
    loss = losses.sum() / count  # 0/0 = NaN when every label is ignored, as F.cross_entropy
    if need_grads and not fold:
        grad_x = (grad_x.to(acc) * scale).to(x.dtype)
        grad_weight = grad_weight * scale
        grad_bias = grad_bias * scale if grad_bias is not None else None
    return loss, grad_x, grad_weight, grad_bias


def _rows_step(backend: str):
    """The per-row step of a chunked backend: the Triton kernel (the padding of linear_padded's rows is scratch) or
    its PyTorch twin."""
    if backend == "triton":
        from ..kernels.cross_entropy import cross_entropy_rows

        def rows_step(logits, labels, ignore_index):
            return cross_entropy_rows(logits, labels, ignore_index, padding_is_scratch=True)

        return rows_step
    return cross_entropy_rows_torch


def _run(backend: str):
    """A backend's differentiable entry: the custom op vlbert_fast::linear_cross_entropy with that backend (the
    reference directly in eager mode). The chunked backends compute the gradients in the forward only when autograd
    will ask for them."""

    def run(x, weight, bias, labels, ignore_index=-100, chunk_size=None):
        if not use_custom_op(backend):
            return linear_cross_entropy_reference(x, weight, bias, labels, ignore_index, chunk_size)
        need_grads = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
        return torch.ops.vlbert_fast.linear_cross_entropy(x, weight, bias, labels, int(ignore_index), chunk_size,
                                                          need_grads, backend)[0]  # fmt: skip

    return run


# ---------------------------------------------------------------------------------------------------------------------
# the custom ops (ops/library.py): vlbert_fast::linear_cross_entropy returns (loss, grad_x, grad_weight, grad_bias):
# the chunked backends' gradients of the mean loss, computed in the forward (empty for the reference or without
# need_grads); the backward scales them. The reference's backward is the op vlbert_fast::linear_cross_entropy_backward.


@torch.library.custom_op("vlbert_fast::linear_cross_entropy", mutates_args=())
def _cross_entropy_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    ignore_index: int,
    chunk_size: int | None,
    need_grads: bool,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    if backend == "reference":
        loss = linear_cross_entropy_reference(x, weight, bias, labels, ignore_index, chunk_size)
        return loss, x.new_empty(0), x.new_empty(0), x.new_empty(0)
    loss, grad_x, grad_weight, grad_bias = chunked_linear_cross_entropy(
        x, weight, bias, labels, ignore_index, chunk_size, _rows_step(backend), need_grads
    )
    return loss, or_empty(grad_x, x), or_empty(grad_weight, x), or_empty(grad_bias, x)


@_cross_entropy_op.register_fake
def _(x, weight, bias, labels, ignore_index, chunk_size, need_grads, backend):
    loss = x.new_empty((), dtype=torch.float32)
    if backend == "reference" or not need_grads:
        return loss, x.new_empty(0), x.new_empty(0), x.new_empty(0)
    acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    grad_bias = x.new_empty(0) if bias is None else x.new_empty(bias.shape, dtype=acc)
    return loss, x.new_empty(x.shape), x.new_empty(weight.shape, dtype=acc), grad_bias


@torch.library.custom_op("vlbert_fast::linear_cross_entropy_backward", mutates_args=())
def _cross_entropy_backward_op(
    grad_loss: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    ignore_index: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference's gradients of (x, weight, bias); bias's is empty without a bias."""
    grad_x, grad_weight, grad_bias = vjp(linear_cross_entropy_reference, [x, weight, bias], grad_loss, labels,
                                         ignore_index)  # fmt: skip
    return unaliased((grad_x, grad_weight, or_empty(grad_bias, x)), (grad_loss, x, weight, bias))


@_cross_entropy_backward_op.register_fake
def _(grad_loss, x, weight, bias, labels, ignore_index):
    return (
        x.new_empty(x.shape),
        weight.new_empty(weight.shape),
        x.new_empty(0) if bias is None else bias.new_empty(bias.shape),
    )


def _setup(ctx, inputs, output):
    x, weight, bias, labels, ignore_index, chunk_size, need_grads, backend = inputs
    # The gradient outputs are never differentiated: without this, autograd fills a zero [V, H] tensor for the
    # weight gradient's own gradient on every backward (a 94 MB fill at BERT's vocabulary, 20 ms of a CPU step).
    ctx.set_materialize_grads(False)
    ctx.backend, ctx.ignore_index, ctx.has_bias = backend, ignore_index, bias is not None
    ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
    if backend == "reference":
        ctx.save_for_backward(x, weight, bias, labels)
    else:
        ctx.save_for_backward(*output[1:])


def _backward(ctx, grad_loss, *_):
    if grad_loss is None:  # not materialised (_setup): nothing flowed back into the loss
        return None, None, None, None, None, None, None, None
    if ctx.backend == "reference":
        x, weight, bias, labels = ctx.saved_tensors
        grad_x, grad_weight, grad_bias = _cross_entropy_backward_op(grad_loss, x, weight, bias, labels,
                                                                    ctx.ignore_index)  # fmt: skip
        return grad_x, grad_weight, grad_bias if ctx.has_bias else None, None, None, None, None, None
    grads = ctx.saved_tensors
    x_dtype, weight_dtype, bias_dtype = ctx.dtypes
    # A unit upstream gradient (the loss summed into the total: the usual case) needs no pass over the [V, H]
    # gradient. Read in eager mode on a CPU only, where it costs nothing; on a GPU it would synchronise, and a traced
    # gradient (a fake or functional tensor subclass) holds no value.
    eager_cpu = grad_loss.device.type == "cpu" and type(grad_loss) is torch.Tensor and not torch.compiler.is_compiling()
    if not (eager_cpu and float(grad_loss) == 1.0):
        g = grad_loss.float()
        grads = tuple(t * g for t in grads)
    grad_x, grad_weight, grad_bias = grads
    grad_bias = grad_bias.to(bias_dtype) if ctx.has_bias else None
    return grad_x.to(x_dtype), grad_weight.to(weight_dtype), grad_bias, None, None, None, None, None


_cross_entropy_op.register_autograd(_backward, setup_context=_setup)


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
    if not debug_checks():  # reading the labels is a host sync on a GPU (ops/library.py)
        return
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
                _run("triton"),
                lambda x, weight, bias, labels, *a, **k: triton_reasons({"x": x, "weight": weight, "bias": bias}),
                auto_skip=lambda x, *a, **k: interpreted(x.device),
            ),
            Backend("chunked", _run("chunked"), lambda *a, **k: []),
            Backend("reference", _run("reference"), lambda *a, **k: []),
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
