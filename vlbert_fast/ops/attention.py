"""Multi-head attention over packed variable-length sequences (README.md, "Ops and kernels").

    varlen_attention(q, k, v, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, backend="auto",
                     *, seed=None, offset=0, check=True, precision="ieee") -> [T, heads, D]
    varlen_attention_packed(qkv, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, backend="auto",
                            *, seed=None, offset=0, check=True, precision="ieee") -> [T, heads, D]

q, k and v are [T, heads, D] over the packed tokens of B sequences; sequence b holds tokens cu_seqlens[b] ..
cu_seqlens[b+1] (cu_seqlens int32 [B+1], starting at 0, non-decreasing, ending at T; an empty sequence is allowed
and costs nothing) and attends to all of its own tokens and nothing else (no causal mask: BERT is bidirectional).
max_seqlen is at least the longest sequence. Per sequence and head:

    out = Dropout(softmax(softmax_scale * q k^T)) v,     softmax_scale = 1 / sqrt(D) when None

The packed entry takes the fused projection qkv [T, 3, heads, D] (q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]) and
its gradient is one [T, 3, heads, D] tensor: the Triton kernels write dq, dk and dv straight into it, flash-attn's
packed kernel does the same, and sdpa and the reference stack their three gradients into it once. Taking q, k and v
as three views instead costs autograd three zero-filled [T, 3, heads, D] buffers and two full-size sums.

Precision: low-precision inputs are read as they are; scores, softmax statistics and accumulation are fp32 (fp64
for fp64 inputs, reference and sdpa only); the output is rounded once to q's dtype. `precision` picks how the Triton
kernels multiply fp32 inputs: "ieee" (exact fp32 products) or "tf32" (tensor cores: 10-bit mantissas in the
products, about 1e-3 relative, fp32 sums; the model's default for fp32 training, `model.attention_precision`).
Other backends ignore it (sdpa and the reference follow torch.backends.cuda.matmul.allow_tf32 on a GPU).

Dropout (inverted) acts on the normalised probabilities, with the draws of FlashAttention-2's CUDA kernels: one
byte per element, so p is realised in steps of 1/256 (`dropout_keep_threshold`: p = 0.1 drops 26/256 = 10.2%) and
kept elements are scaled by 256 / (256 - threshold), which keeps the expectation exact. With an integer `seed` the
mask is `attention_dropout_keep` (Philox-4x32-7; kernels/attention_common.py says which byte of which call serves
which element), so the triton and reference backends draw the same mask, and a seed reproduces it (an int, or a
one-element int64 tensor on q's device). The counters (offset + heads * T * max_seqlen) must stay below 2**31. With
`seed=None` each backend takes a fresh mask from torch's generators (triton and reference draw a key on q's device
from its generator, read there by the kernels: no host sync; sdpa and flash-attn use their own Philox streams and
their own exact p), so `torch.manual_seed` still makes a run reproducible; sdpa and flash_attn cannot take a seed.

Backends, in `auto`'s order:
- flash_attn: `flash_attn_varlen_func` (`flash_attn_varlen_qkvpacked_func` for the packed entry) when the optional
  flash-attn package imports (CUDA, fp16/bf16);
- triton: our FlashAttention-2 style kernels (kernels/attention.py), forward and backward, head dims up to 128;
- sdpa: PyTorch's scaled_dot_product_attention on the padded [B, heads, max_seqlen, D] layout with a key mask;
- reference: plain PyTorch per sequence, the specification (its backward is autograd's).
triton and reference run behind the custom ops `torch.ops.vlbert_fast.varlen_attention` and `..._packed`
(ops/library.py); sdpa and flash_attn are PyTorch's and flash-attn's own ops, called as they are (a backward op
could not replay their dropout generators). The op's contract stops at head dim 256 (flash-attn's limit): a model
that runs here must run on a GPU too.

`check=True` validates the values of cu_seqlens and max_seqlen in debug mode (VLBERT_FAST_DEBUG_CHECKS=1,
ops/library.py): that reads them on the host, one device synchronisation; the model checks its batch once and passes
check=False to each layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .dispatch import Backend, Op, import_error, interpreted, register, triton_reasons
from .dropout import philox_4x32
from .library import debug_checks, dropout_seed, require_key, use_custom_op, vjp

MAX_HEAD_DIM = 256
"""The op's largest head dimension: flash-attn's limit, so a model that runs on any backend runs on all."""
MAX_COUNTER = 2**31
"""Dropout counters (offset + heads * T * max_seqlen) stay below this: the kernels' 32-bit counter arithmetic."""
PRECISIONS = ("ieee", "tf32")
PHILOX_ROUNDS = 7
"""FlashAttention-2's dropout generator: Philox-4x32 with 7 rounds (it passes BigCrush; Salmon et al. 2011)."""


# ---------------------------------------------------------------------------------------------------------------------
# the specification


def dropout_keep_threshold(dropout_p: float) -> tuple[int, float]:
    """(threshold, scale) of the byte draws: an element is kept when its draw (0..255) is at least threshold =
    round(256 p), at most 255, and then scaled by 256 / (256 - threshold); threshold 0 means no dropout."""
    threshold = min(255, round(dropout_p * 256)) if dropout_p > 0 else 0
    return threshold, (256.0 / (256 - threshold) if threshold else 1.0)


def attention_dropout_keep(
    seed: int,
    offset: int,
    start: int,
    length: int,
    heads: int,
    total: int,
    max_seqlen: int,
    dropout_p: float,
    device: torch.device,
) -> torch.Tensor:  # [heads, length, length] bool
    """Keep mask of the sequence whose tokens start at `start`: element (head h, query i, key j) takes byte
    2 * bit3(i) + bit0(j) of word (j >> 3) & 3 of Philox-4x32-7(seed; offset + (h T + start + (i with bit 3 clear))
    max_seqlen + (j with bits 0, 3, 4 clear), 0, 0, 0) and is kept when the byte is >= the threshold
    (`dropout_keep_threshold`): 16 elements per Philox call, as kernels/attention_common.py draws them."""
    threshold, _ = dropout_keep_threshold(dropout_p)
    i = torch.arange(length, device=device, dtype=torch.int64)
    head = torch.arange(heads, device=device, dtype=torch.int64)[:, None, None]
    counter = offset + (head * total + start + (i & ~8)[:, None]) * max_seqlen + (i & ~0b11001)[None, None, :]
    zero = torch.zeros_like(counter)
    words = torch.stack(philox_4x32((counter, zero, zero, zero), (seed & 0xFFFFFFFF, seed >> 32), PHILOX_ROUNDS))
    word = words.gather(0, ((i >> 3) & 3).expand(1, heads, length, length))[0]
    byte = 2 * ((i >> 3) & 1)[:, None] + (i & 1)[None, :]
    return ((word >> (8 * byte)) & 0xFF) >= threshold


def _resolve_seed(seed: int | torch.Tensor | None, dropout_p: float, device: torch.device) -> torch.Tensor | int:
    """The key of the triton and reference backends: the given one, or a fresh one drawn on the device by its
    generator ([1] int64, ops/library.py `dropout_seed`); 0 without dropout (never read)."""
    key = dropout_seed(seed, dropout_p, device)
    return 0 if key is None else key


def varlen_attention_reference(
    q: torch.Tensor,  # [T, heads, D]
    k: torch.Tensor,  # [T, heads, D]
    v: torch.Tensor,  # [T, heads, D]
    cu_seqlens: torch.Tensor,  # [B+1] int32
    max_seqlen: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    precision: str = "ieee",
    return_probs: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:  # [T, heads, D] in q's dtype
    """Plain PyTorch, one sequence at a time: the specification (module docstring; `precision` is the Triton
    kernels' and ignored here). With `return_probs`, also the softmax probabilities of each sequence, [heads, n, n]
    in the compute dtype, before dropout. The sequences are split off as views (`torch.split`), whose backward is one
    concatenation, not a zero-filled buffer per sequence."""
    total, heads, head_dim = q.shape
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    scale = 1.0 / math.sqrt(head_dim) if softmax_scale is None else softmax_scale
    seed = _resolve_seed(seed, dropout_p, q.device)
    threshold, keep_scale = dropout_keep_threshold(dropout_p)
    bounds = cu_seqlens.tolist()
    lengths = [end - start for start, end in zip(bounds[:-1], bounds[1:], strict=True)]
    outs, all_probs = [], []
    for start, q_n, k_n, v_n in zip(bounds[:-1], *(t.split(lengths) for t in (q, k, v)), strict=True):
        q_h, k_h, v_h = (t.transpose(0, 1).to(compute) for t in (q_n, k_n, v_n))  # [heads, n, D]
        probs = torch.softmax(torch.matmul(q_h, k_h.transpose(1, 2)) * scale, dim=-1)
        all_probs.append(probs)
        if threshold:
            keep = attention_dropout_keep(seed, offset, start, q_n.shape[0], heads, total, max_seqlen, dropout_p,
                                          q.device)  # fmt: skip
            probs = torch.where(keep, probs * keep_scale, 0.0)
        outs.append(torch.matmul(probs, v_h).transpose(0, 1))
    out = torch.cat(outs).to(q.dtype) if outs else q.new_empty(0, heads, head_dim)
    return (out, all_probs) if return_probs else out


def varlen_attention_packed_reference(
    qkv: torch.Tensor,  # [T, 3, heads, D]
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    seed: int | None = None,
    offset: int = 0,
    precision: str = "ieee",
) -> torch.Tensor:  # [T, heads, D]
    """The packed entry's specification: the reference on qkv's three parts (their gradients are stacked into one
    [T, 3, heads, D] tensor by autograd's unbind backward)."""
    return varlen_attention_reference(*qkv.unbind(1), cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, offset)


# ---------------------------------------------------------------------------------------------------------------------
# checks


def _check_packed(qkv) -> None:
    if not isinstance(qkv, torch.Tensor):
        raise TypeError(f"qkv: expected a tensor, found {type(qkv).__name__}")
    if qkv.dim() != 4 or qkv.shape[1] != 3:
        raise ValueError(f"qkv: expected shape [total_tokens, 3, heads, head_dim], found {tuple(qkv.shape)}")


def _check_inputs(q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, offset, precision, check) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, found {precision!r}")
    for name, t in (("q", q), ("k", k), ("v", v), ("cu_seqlens", cu_seqlens)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a tensor, found {type(t).__name__}")
    if q.dim() != 3:
        raise ValueError(f"q: expected shape [total_tokens, heads, head_dim], found {tuple(q.shape)}")
    for name, t in (("k", k), ("v", v)):
        if t.shape != q.shape:
            raise ValueError(f"{name}: expected the shape of q {tuple(q.shape)}, found {tuple(t.shape)}")
    if not q.is_floating_point():
        raise TypeError(f"q: expected a floating dtype, found {q.dtype}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name}: dtype {t.dtype} differs from q's {q.dtype}; cast them to one dtype")
    for name, t in (("k", k), ("v", v), ("cu_seqlens", cu_seqlens)):
        if t.device != q.device:
            raise ValueError(f"{name}: on {t.device}, but q is on {q.device}; move them to one device")
    if q.shape[1] == 0 or q.shape[2] == 0:
        raise ValueError(f"q: heads and head_dim must be positive, found shape {tuple(q.shape)}")
    if cu_seqlens.dim() != 1 or cu_seqlens.shape[0] < 1:
        raise ValueError(f"cu_seqlens: expected shape [B+1] with B >= 0, found {tuple(cu_seqlens.shape)}")
    if cu_seqlens.dtype != torch.int32:
        raise TypeError(f"cu_seqlens: expected int32 (as flash-attn takes it), found {cu_seqlens.dtype}")
    if isinstance(max_seqlen, bool) or not isinstance(max_seqlen, int) or max_seqlen < 0:
        raise ValueError(f"max_seqlen: expected a non-negative int, found {max_seqlen!r}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p: expected a probability in [0, 1), found {dropout_p}")
    if softmax_scale is not None and not (math.isfinite(softmax_scale) and softmax_scale > 0):
        raise ValueError(f"softmax_scale: expected a positive finite number or None, found {softmax_scale}")
    if seed is not None and not isinstance(seed, torch.Tensor) and not 0 <= seed < 2**63:
        raise ValueError(f"seed: expected an integer in [0, 2**63), a [1] int64 tensor or None, found {seed}")
    counters = offset + q.shape[1] * q.shape[0] * max_seqlen
    if dropout_p > 0 and not (offset >= 0 and counters <= MAX_COUNTER):
        raise ValueError(
            f"offset: dropout counters offset + heads * T * max_seqlen = {offset} + "
            f"{q.shape[1]} * {q.shape[0]} * {max_seqlen} must lie in [0, 2**31]; split the batch"
        )
    if check and debug_checks():
        _check_values(cu_seqlens, max_seqlen, q.shape[0])


def _check_values(cu_seqlens: torch.Tensor, max_seqlen: int, total: int) -> None:
    cu = cu_seqlens.tolist()
    if cu[0] != 0:
        raise ValueError(f"cu_seqlens: must start at 0, found {cu[0]} (cu_seqlens = {_show(cu)})")
    steps = [b - a for a, b in zip(cu[:-1], cu[1:], strict=True)]
    bad = next((i for i, s in enumerate(steps) if s < 0), None)
    if bad is not None:
        raise ValueError(
            f"cu_seqlens: must be non-decreasing, but entry {bad + 1} ({cu[bad + 1]}) is below entry {bad} "
            f"({cu[bad]}) (cu_seqlens = {_show(cu)})"
        )
    if cu[-1] != total:
        raise ValueError(f"cu_seqlens: last entry {cu[-1]} must equal the token count of q, k and v ({total})")
    longest = max(steps, default=0)
    if max_seqlen < longest:
        raise ValueError(f"max_seqlen: {max_seqlen} is below the longest sequence in cu_seqlens ({longest})")


def _show(values: list[int], limit: int = 12) -> str:
    return str(values) if len(values) <= limit else f"[{', '.join(map(str, values[:limit]))}, ...]"


# ---------------------------------------------------------------------------------------------------------------------
# backends: each takes (q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, offset, precision), or qkv
# [T, 3, heads, D] in place of q, k, v for the packed entry


def _head_dim_reasons(q: torch.Tensor, limit: int, who: str) -> list[str]:
    head_dim = q.shape[2]
    return [f"q: head dimension {head_dim} is above {limit}, the maximum of {who}"] if head_dim > limit else []


def _seeded_reasons(dropout_p: float, seed: int | None, who: str) -> list[str]:
    if dropout_p > 0 and seed is not None:
        return [f"seed: {who} draws its dropout mask from its own generator; a seeded mask needs triton or reference"]
    return []


def flash_attn_import_error() -> str | None:
    """None when flash-attn imports; else why not (once per process, probed when this module is imported)."""
    return import_error("flash_attn")


import_error("flash_attn")


def _flash_reasons(q, k, v, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, seed=None, *_):
    error = flash_attn_import_error()
    if error is not None:
        return [f"flash-attn is not importable ({error})"]
    reasons = []
    if q.device.type != "cuda":
        reasons.append(f"q: on {q.device}; flash-attn runs on CUDA GPUs")
    if q.dtype not in (torch.float16, torch.bfloat16):
        reasons.append(f"q: dtype {q.dtype} is not supported (flash-attn: float16, bfloat16)")
    if q.shape[2] % 8:
        reasons.append(f"q: head dimension {q.shape[2]} is not a multiple of 8 (flash-attn)")
    return reasons + _head_dim_reasons(q, MAX_HEAD_DIM, "flash-attn") + _seeded_reasons(dropout_p, seed, "flash-attn")


def _run_flash(q, k, v, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, *_):
    from flash_attn import flash_attn_varlen_func

    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    return flash_attn_varlen_func(
        q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, dropout_p=dropout_p, softmax_scale=softmax_scale
    )


def _run_flash_packed(qkv, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, *_):
    from flash_attn import flash_attn_varlen_qkvpacked_func

    qkv = qkv if qkv.stride(-1) == 1 else qkv.contiguous()
    return flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens, max_seqlen, dropout_p=dropout_p,
                                            softmax_scale=softmax_scale)  # fmt: skip


def _triton_reasons(q, k, v, cu_seqlens, max_seqlen, *_):
    reasons = triton_reasons({"q": q, "k": k, "v": v, "cu_seqlens": cu_seqlens})
    if not reasons:
        from ..kernels.utils import MAX_ATTENTION_HEAD_DIM

        reasons += _head_dim_reasons(q, MAX_ATTENTION_HEAD_DIM, "the Triton kernels")
        span = max_seqlen * max(t.stride(0) for t in (q, k, v))
        if span >= 2**31:
            reasons.append(
                f"max_seqlen {max_seqlen} x token stride {span // max(max_seqlen, 1)} does not fit the kernels' "
                "32-bit offsets within a sequence"
            )
    return reasons


def _triton_args(head_dim, max_seqlen, dropout_p, softmax_scale, seed, offset, precision) -> tuple:
    """The launchers' arguments after the tensors (kernels/attention.py); `seed` the resolved key."""
    scale = 1.0 / math.sqrt(head_dim) if softmax_scale is None else float(softmax_scale)
    threshold, keep_scale = dropout_keep_threshold(dropout_p)
    return int(max_seqlen), scale, threshold, keep_scale, seed, int(offset), precision


def _run(backend: str, packed: bool):
    """The triton and reference backends' differentiable entry: the custom op vlbert_fast::varlen_attention (or
    _packed) with that backend, the reference directly in eager mode; the dropout key resolved once, here, so the
    backward (kernels, or the reference recomputed) sees the forward's mask."""
    reference = varlen_attention_packed_reference if packed else varlen_attention_reference
    op_name = "varlen_attention_packed" if packed else "varlen_attention"

    def run(*args):
        n = 1 if packed else 3
        parts, (cu_seqlens, max_seqlen, *rest) = args[:n], args[n:]
        dropout_p, softmax_scale, seed, offset, precision = rest + [0.0, None, None, 0, "ieee"][len(rest) :]
        key = dropout_seed(seed, dropout_p, parts[0].device)
        if not use_custom_op(backend):
            return reference(*parts, cu_seqlens, max_seqlen, dropout_p, softmax_scale, key, offset, precision)
        op = getattr(torch.ops.vlbert_fast, op_name)
        return op(*parts, cu_seqlens, int(max_seqlen), float(dropout_p), softmax_scale, key, int(offset), precision,
                  backend)[0]  # fmt: skip

    return run


# ---------------------------------------------------------------------------------------------------------------------
# the custom ops (ops/library.py): vlbert_fast::varlen_attention and varlen_attention_packed, each returning (out,
# lse: the triton forward's log-sum-exp [heads, T], empty for the reference), and their backward ops


def _forward(parts, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, offset, precision, backend):
    key = require_key(seed, dropout_p)
    if backend == "triton":
        from ..kernels.attention import attention_forward
        from ..kernels.attention_common import last_dim_contiguous

        q, k, v = (last_dim_contiguous(t) for t in parts)
        args = _triton_args(q.shape[2], max_seqlen, dropout_p, softmax_scale, key, offset, precision)
        return attention_forward(q, k, v, cu_seqlens, *args)
    out = varlen_attention_reference(*parts, cu_seqlens, max_seqlen, dropout_p, softmax_scale, key, offset, precision)
    return out.contiguous(), out.new_empty(0, dtype=torch.float32)


def _backward_parts(grad_out, parts, out, lse, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, offset,
                    precision, backend, grads):  # fmt: skip
    """Writes dq, dk, dv into `grads` (three [T, heads, D] tensors, or views of one [T, 3, heads, D])."""
    key = require_key(seed, dropout_p)
    if backend == "triton":
        from ..kernels.attention_bwd import attention_backward
        from ..kernels.attention_common import last_dim_contiguous

        q, k, v = (last_dim_contiguous(t) for t in parts)
        args = _triton_args(q.shape[2], max_seqlen, dropout_p, softmax_scale, key, offset, precision)
        attention_backward(grad_out, q, k, v, out, lse, cu_seqlens, *grads, *args)
        return
    computed = vjp(varlen_attention_reference, list(parts), grad_out, cu_seqlens, max_seqlen, dropout_p, softmax_scale,
                   key, offset, precision)  # fmt: skip
    for target, g in zip(grads, computed, strict=True):
        target.copy_(g)


def _out_fakes(q, backend):
    total, heads, head_dim = q.shape
    lse = q.new_empty((heads, total) if backend == "triton" else (0,), dtype=torch.float32)
    return q.new_empty((total, heads, head_dim)), lse


@torch.library.custom_op("vlbert_fast::varlen_attention", mutates_args=())
def _attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    dropout_p: float,
    softmax_scale: float | None,
    seed: torch.Tensor | None,
    offset: int,
    precision: str,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _forward((q, k, v), cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, offset, precision, backend)


@_attention_op.register_fake
def _(q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, offset, precision, backend):
    return _out_fakes(q, backend)


@torch.library.custom_op("vlbert_fast::varlen_attention_backward", mutates_args=())
def _attention_backward_op(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    dropout_p: float,
    softmax_scale: float | None,
    seed: torch.Tensor | None,
    offset: int,
    precision: str,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grads = [torch.empty(q.shape, dtype=q.dtype, device=q.device) for _ in "qkv"]
    _backward_parts(grad_out, (q, k, v), out, lse, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, offset,
                    precision, backend, grads)  # fmt: skip
    return tuple(grads)


@_attention_backward_op.register_fake
def _(grad_out, q, k, v, *rest):
    return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape)


def _setup(ctx, inputs, output):
    q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, offset, precision, backend = inputs
    ctx.save_for_backward(q, k, v, *output, cu_seqlens, seed)
    ctx.args = (max_seqlen, dropout_p, softmax_scale, offset, precision, backend)


def _backward(ctx, grad_out, _):
    q, k, v, out, lse, cu_seqlens, seed = ctx.saved_tensors
    max_seqlen, dropout_p, softmax_scale, offset, precision, backend = ctx.args
    grads = _attention_backward_op(grad_out, q, k, v, out, lse, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed,
                                   offset, precision, backend)  # fmt: skip
    return (*grads, *[None] * 8)


_attention_op.register_autograd(_backward, setup_context=_setup)


@torch.library.custom_op("vlbert_fast::varlen_attention_packed", mutates_args=())
def _packed_op(
    qkv: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    dropout_p: float,
    softmax_scale: float | None,
    seed: torch.Tensor | None,
    offset: int,
    precision: str,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _forward(qkv.unbind(1), cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, offset, precision, backend)


@_packed_op.register_fake
def _(qkv, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, offset, precision, backend):
    return _out_fakes(qkv[:, 0], backend)


@torch.library.custom_op("vlbert_fast::varlen_attention_packed_backward", mutates_args=())
def _packed_backward_op(
    grad_out: torch.Tensor,
    qkv: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    dropout_p: float,
    softmax_scale: float | None,
    seed: torch.Tensor | None,
    offset: int,
    precision: str,
    backend: str,
) -> torch.Tensor:
    """One [T, 3, heads, D] gradient: the triton kernels write dq, dk and dv straight into its three parts."""
    grad_qkv = torch.empty(qkv.shape, dtype=qkv.dtype, device=qkv.device)
    _backward_parts(grad_out, qkv.unbind(1), out, lse, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, offset,
                    precision, backend, grad_qkv.unbind(1))  # fmt: skip
    return grad_qkv


@_packed_backward_op.register_fake
def _(grad_out, qkv, *rest):
    return qkv.new_empty(qkv.shape)


def _packed_setup(ctx, inputs, output):
    qkv, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, offset, precision, backend = inputs
    ctx.save_for_backward(qkv, *output, cu_seqlens, seed)
    ctx.args = (max_seqlen, dropout_p, softmax_scale, offset, precision, backend)


def _packed_backward(ctx, grad_out, _):
    qkv, out, lse, cu_seqlens, seed = ctx.saved_tensors
    max_seqlen, dropout_p, softmax_scale, offset, precision, backend = ctx.args
    grad_qkv = _packed_backward_op(grad_out, qkv, out, lse, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed,
                                   offset, precision, backend)  # fmt: skip
    return (grad_qkv, *[None] * 8)


_packed_op.register_autograd(_packed_backward, setup_context=_packed_setup)


def _sdpa_reasons(q, k, v, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, seed=None, *_):
    return _head_dim_reasons(q, MAX_HEAD_DIM, "the op") + _seeded_reasons(dropout_p, seed, "sdpa")


def _sdpa_padded(parts, total, cu_seqlens, max_seqlen, dropout_p, softmax_scale):
    """SDPA on the padded [B, heads, max_seqlen, D] layout, gathered back to [T, heads, D]. `parts` takes the padder
    (a [T, *rest] tensor -> [B, max_seqlen, *rest]) and returns q, k, v as [B, max_seqlen, heads, D]."""
    batch = cu_seqlens.shape[0] - 1
    if total == batch * max_seqlen and batch:
        # Every sequence is max_seqlen long (the op's contract: no length above max_seqlen, which debug checks
        # verify): the pack is the padded layout already, so a view replaces the scatter and gather, and SDPA runs
        # without a mask (its fused kernels).
        q, k, v = (t.transpose(1, 2) for t in parts(lambda t: t.view(batch, max_seqlen, *t.shape[1:])))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=softmax_scale)  # [B, heads, L, D]
        return out.transpose(1, 2).reshape(total, out.shape[1], out.shape[3])
    device = cu_seqlens.device
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    sequence = torch.repeat_interleave(torch.arange(batch, device=device), lengths, output_size=total)
    position = torch.arange(total, device=device) - cu_seqlens.long()[sequence]

    def padded(t: torch.Tensor) -> torch.Tensor:  # [T, *rest] -> [B, L, *rest]
        return t.new_zeros(batch, max_seqlen, *t.shape[1:]).index_put((sequence, position), t)

    keys = torch.arange(max_seqlen, device=device)[None, :] < lengths[:, None]
    keys = keys | (lengths == 0)[:, None]  # an empty sequence attends to its zero padding, not to nothing (NaN)
    q, k, v = (t.transpose(1, 2) for t in parts(padded))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=keys[:, None, None, :], dropout_p=dropout_p,
                                         scale=softmax_scale)  # fmt: skip
    return out.transpose(1, 2)[sequence, position]


def _run_sdpa(q, k, v, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, *_):
    """Pads each of q, k, v to [B, heads, max_seqlen, D], masks the padded keys, gathers the real rows back."""
    return _sdpa_padded(lambda pad: (pad(q), pad(k), pad(v)), q.shape[0], cu_seqlens, max_seqlen, dropout_p,
                        softmax_scale)  # fmt: skip


def _run_sdpa_packed(qkv, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, *_):
    """Pads qkv once; the backward gathers one [T, 3, heads, D] gradient from the stacked padded ones."""
    return _sdpa_padded(lambda pad: pad(qkv).unbind(2), qkv.shape[0], cu_seqlens, max_seqlen, dropout_p, softmax_scale)


def _reference_reasons(q, k, v, cu_seqlens, max_seqlen, *_):
    return _head_dim_reasons(q, MAX_HEAD_DIM, "the op")


def _unpacked(reasons):
    """A backend's reasons for qkv [T, 3, heads, D], from its reasons for q, k, v."""
    return lambda qkv, *args, **kwargs: reasons(*qkv.unbind(1), *args, **kwargs)


ATTENTION = register(
    Op(
        "varlen_attention",
        [
            Backend("flash_attn", _run_flash, _flash_reasons),
            Backend(
                "triton", _run("triton", False), _triton_reasons, auto_skip=lambda q, *a, **k: interpreted(q.device)
            ),
            Backend("sdpa", _run_sdpa, _sdpa_reasons),
            Backend("reference", _run("reference", False), _reference_reasons),
        ],
    )
)
ATTENTION_PACKED = register(
    Op(
        "varlen_attention_packed",
        [
            Backend("flash_attn", _run_flash_packed, _unpacked(_flash_reasons)),
            Backend(
                "triton",
                _run("triton", True),
                _unpacked(_triton_reasons),
                auto_skip=lambda qkv, *a, **k: interpreted(qkv.device),
            ),  # fmt: skip
            Backend("sdpa", _run_sdpa_packed, _unpacked(_sdpa_reasons)),
            Backend("reference", _run("reference", True), _unpacked(_reference_reasons)),
        ],
    )
)


def varlen_attention(
    q: torch.Tensor,  # [T, heads, D]
    k: torch.Tensor,  # [T, heads, D]
    v: torch.Tensor,  # [T, heads, D]
    cu_seqlens: torch.Tensor,  # [B+1] int32
    max_seqlen: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    backend: str = "auto",
    *,
    seed: int | None = None,
    offset: int = 0,
    check: bool = True,
    precision: str = "ieee",
) -> torch.Tensor:  # [T, heads, D]
    """Attention within each packed sequence (module docstring); `backend` picks the implementation."""
    _check_inputs(q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, offset, precision, check)
    return ATTENTION(q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, offset, precision,
                     backend=backend)  # fmt: skip


def varlen_attention_packed(
    qkv: torch.Tensor,  # [T, 3, heads, D]: q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    cu_seqlens: torch.Tensor,  # [B+1] int32
    max_seqlen: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    backend: str = "auto",
    *,
    seed: int | None = None,
    offset: int = 0,
    check: bool = True,
    precision: str = "ieee",
) -> torch.Tensor:  # [T, heads, D]
    """`varlen_attention` on the fused projection; its gradient is one [T, 3, heads, D] tensor (module docstring)."""
    _check_packed(qkv)
    _check_inputs(*qkv.unbind(1), cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, offset, precision, check)
    return ATTENTION_PACKED(qkv, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, offset, precision,
                            backend=backend)  # fmt: skip
