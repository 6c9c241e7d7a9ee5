"""Multi-head attention over packed variable-length sequences (DESIGN.md, "Ops").

    varlen_attention(q, k, v, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, backend="auto",
                     *, seed=None, offset=0, check=True) -> [T, heads, D]

q, k and v are [T, heads, D] over the packed tokens of B sequences; sequence b holds tokens cu_seqlens[b] ..
cu_seqlens[b+1] (cu_seqlens int32 [B+1], starting at 0, non-decreasing, ending at T; an empty sequence is allowed
and costs nothing) and attends to all of its own tokens and nothing else (no causal mask: BERT is bidirectional).
max_seqlen is at least the longest sequence. Per sequence and head:

    out = Dropout(softmax(softmax_scale * q k^T)) v,     softmax_scale = 1 / sqrt(D) when None

Precision: low-precision inputs are read as they are; scores, softmax statistics and accumulation are fp32 (fp64
for fp64 inputs, reference and sdpa only); the output is rounded once to q's dtype.

Dropout (inverted, scale 1/(1-p)) acts on the normalised probabilities. With an integer `seed`, element (head h,
query token i of the packed stream, key position j within its sequence) is kept when
`philox_uniform(seed, offset + (h * T + i) * max_seqlen + j) >= p` — the draw of Triton's tl.rand, spelled in
PyTorch by ops/embedding.py — so the triton and reference backends draw the same mask, and a seed reproduces it.
The counters must stay below 2**31. With `seed=None` each backend takes a fresh mask from torch's generators (triton
and reference draw their seed from torch's CPU generator; sdpa and flash-attn use their own Philox streams), so
`torch.manual_seed` still makes a run reproducible; sdpa and flash_attn cannot take a seed.

Backends, in `auto`'s order:
- flash_attn: `flash_attn_varlen_func` when the optional flash-attn package imports (CUDA, fp16/bf16);
- triton: our FlashAttention-2 style kernels (kernels/attention.py), forward and backward, head dims up to 128;
- sdpa: PyTorch's scaled_dot_product_attention on the padded [B, heads, max_seqlen, D] layout with a key mask;
- reference: plain PyTorch per sequence, the specification (its backward is autograd's).
The op's contract stops at head dim 256 (flash-attn's limit): a model that runs here must run on a GPU too.

`check=True` validates the values of cu_seqlens and max_seqlen, which reads them on the host (one device
synchronisation); the model checks its batch once and passes check=False to each layer.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from .dispatch import Backend, Op, interpreted, register, triton_reasons
from .embedding import philox_uniform

MAX_HEAD_DIM = 256
"""The op's largest head dimension: flash-attn's limit, so a model that runs on any backend runs on all."""
MAX_COUNTER = 2**31
"""Dropout counters (offset + heads * T * max_seqlen) stay below this: tl.rand's 32-bit Philox path."""


# ---------------------------------------------------------------------------------------------------------------------
# the specification


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
    """Keep mask of the sequence whose tokens start at `start` (module docstring)."""
    head = torch.arange(heads, device=device, dtype=torch.int64)[:, None, None]
    row = start + torch.arange(length, device=device, dtype=torch.int64)[None, :, None]
    col = torch.arange(length, device=device, dtype=torch.int64)[None, None, :]
    return philox_uniform(seed, offset + (head * total + row) * max_seqlen + col) >= dropout_p


def _resolve_seed(seed: int | None, dropout_p: float) -> int:
    """The seed of the triton and reference backends: the given one, or a fresh one from torch's CPU generator."""
    if dropout_p == 0:
        return 0
    return int(torch.randint(0, 2**62, ())) if seed is None else int(seed)


def varlen_attention_reference(
    q: torch.Tensor,  # [T, heads, D]
    k: torch.Tensor,  # [T, heads, D]
    v: torch.Tensor,  # [T, heads, D]
    cu_seqlens: torch.Tensor,  # [B+1] int32
    max_seqlen: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    seed: int | None = None,
    offset: int = 0,
    return_probs: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:  # [T, heads, D] in q's dtype
    """Plain PyTorch, one sequence at a time: the specification (module docstring). With `return_probs`, also the
    softmax probabilities of each sequence, [heads, n, n] in the compute dtype, before dropout."""
    total, heads, head_dim = q.shape
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    scale = 1.0 / math.sqrt(head_dim) if softmax_scale is None else softmax_scale
    seed = _resolve_seed(seed, dropout_p)
    bounds = cu_seqlens.tolist()
    outs, all_probs = [], []
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        q_h, k_h, v_h = (t[start:end].transpose(0, 1).to(compute) for t in (q, k, v))  # [heads, n, D]
        probs = torch.softmax(torch.matmul(q_h, k_h.transpose(1, 2)) * scale, dim=-1)
        all_probs.append(probs)
        if dropout_p > 0:
            keep = attention_dropout_keep(seed, offset, start, end - start, heads, total, max_seqlen, dropout_p,
                                          q.device)  # fmt: skip
            probs = torch.where(keep, probs * (1.0 / (1.0 - dropout_p)), 0.0)
        outs.append(torch.matmul(probs, v_h).transpose(0, 1))
    out = torch.cat(outs).to(q.dtype) if outs else q.new_empty(0, heads, head_dim)
    return (out, all_probs) if return_probs else out


# ---------------------------------------------------------------------------------------------------------------------
# checks


def _check_inputs(q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, offset, check) -> None:
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
    if seed is not None and not 0 <= seed < 2**63:
        raise ValueError(f"seed: expected an integer in [0, 2**63) or None, found {seed}")
    counters = offset + q.shape[1] * q.shape[0] * max_seqlen
    if dropout_p > 0 and not (offset >= 0 and counters <= MAX_COUNTER):
        raise ValueError(
            f"offset: dropout counters offset + heads * T * max_seqlen = {offset} + "
            f"{q.shape[1]} * {q.shape[0]} * {max_seqlen} must lie in [0, 2**31]; split the batch"
        )
    if check:
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
# backends


def _head_dim_reasons(q: torch.Tensor, limit: int, who: str) -> list[str]:
    head_dim = q.shape[2]
    return [f"q: head dimension {head_dim} is above {limit}, the maximum of {who}"] if head_dim > limit else []


def _seeded_reasons(dropout_p: float, seed: int | None, who: str) -> list[str]:
    if dropout_p > 0 and seed is not None:
        return [f"seed: {who} draws its dropout mask from its own generator; a seeded mask needs triton or reference"]
    return []


@functools.cache
def flash_attn_import_error() -> str | None:
    """None when flash-attn imports; else why not (once per process)."""
    try:
        import flash_attn  # noqa: F401
    except Exception as exc:  # an optional CUDA package fails in many ways on import; report it, do not crash
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def _flash_reasons(q, k, v, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, seed=None, offset=0):
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


def _run_flash(q, k, v, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, seed=None, offset=0):
    from flash_attn import flash_attn_varlen_func

    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    return flash_attn_varlen_func(
        q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, dropout_p=dropout_p, softmax_scale=softmax_scale
    )


def _triton_reasons(q, k, v, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, seed=None, offset=0):
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


def _run_triton(q, k, v, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, seed=None, offset=0):
    from ..kernels.attention import VarlenAttentionFunction

    scale = 1.0 / math.sqrt(q.shape[2]) if softmax_scale is None else float(softmax_scale)
    seed = _resolve_seed(seed, dropout_p)
    return VarlenAttentionFunction.apply(q, k, v, cu_seqlens, int(max_seqlen), scale, float(dropout_p), seed,
                                         int(offset))  # fmt: skip


def _sdpa_reasons(q, k, v, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, seed=None, offset=0):
    return _head_dim_reasons(q, MAX_HEAD_DIM, "the op") + _seeded_reasons(dropout_p, seed, "sdpa")


def _run_sdpa(q, k, v, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, seed=None, offset=0):
    """Pads to [B, heads, max_seqlen, D], masks the padded keys, gathers the real rows back."""
    total, heads, head_dim = q.shape
    batch = cu_seqlens.shape[0] - 1
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    sequence = torch.repeat_interleave(torch.arange(batch, device=q.device), lengths, output_size=total)
    position = torch.arange(total, device=q.device) - cu_seqlens.long()[sequence]

    def padded(t: torch.Tensor) -> torch.Tensor:  # [T, heads, D] -> [B, heads, L, D]
        out = t.new_zeros(batch, max_seqlen, heads, head_dim)
        return out.index_put((sequence, position), t).transpose(1, 2)

    keys = torch.arange(max_seqlen, device=q.device)[None, :] < lengths[:, None]
    keys = keys | (lengths == 0)[:, None]  # an empty sequence attends to its zero padding, not to nothing (NaN)
    out = F.scaled_dot_product_attention(
        padded(q), padded(k), padded(v), attn_mask=keys[:, None, None, :], dropout_p=dropout_p, scale=softmax_scale
    )
    return out.transpose(1, 2)[sequence, position]


def _reference_reasons(q, k, v, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, seed=None, offset=0):
    return _head_dim_reasons(q, MAX_HEAD_DIM, "the op")


ATTENTION = register(
    Op(
        "varlen_attention",
        [
            Backend("flash_attn", _run_flash, _flash_reasons),
            Backend("triton", _run_triton, _triton_reasons, auto_skip=lambda q, *a, **k: interpreted(q.device)),
            Backend("sdpa", _run_sdpa, _sdpa_reasons),
            Backend("reference", varlen_attention_reference, _reference_reasons),
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
) -> torch.Tensor:  # [T, heads, D]
    """Attention within each packed sequence (module docstring); `backend` picks the implementation."""
    _check_inputs(q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, offset, check)
    return ATTENTION(q, k, v, cu_seqlens, max_seqlen, dropout_p, softmax_scale, seed, offset, backend=backend)
