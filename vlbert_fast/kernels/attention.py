"""Variable-length (packed) attention in Triton, FlashAttention-2 style: forward (here) and backward
(kernels/attention_bwd.py), online softmax, seeded dropout, fp32 statistics.

The op, its arguments and its reference are specified in `vlbert_fast/ops/attention.py`; this module holds the
forward kernel and the host launchers; the autograd layer is the custom op in ops/attention.py (ops/library.py).

Layout: q, k, v and the output are [T, heads, D] over the packed tokens of B sequences, with any token and head
strides: the packed entry passes q, k and v as views of one fused [T, 3, heads, D] projection, and its backward
writes dq, dk and dv into one [T, 3, heads, D] gradient. Sequence b holds tokens cu_seqlens[b] .. cu_seqlens[b+1]
and attends to itself only. Every program owns one block of rows of one sequence and one head: grid axis 0 runs
over (sequence, row block) pairs, axis 1 over heads. Row blocks past the end of a short sequence exit at once, so
the grid is sized by the longest sequence without computing on padding.

Forward (Dao 2023, "FlashAttention-2", algorithm 1): a block of BLOCK_M queries walks the keys of its sequence in
blocks of BLOCK_N, keeping the running maximum m and sum l of exp(scores) in fp32 and rescaling the fp32 output
accumulator whenever m grows. Scores are kept in log2 units (softmax_scale * log2(e) folded into one multiplier) so
exp2 does the exponentials. The full key blocks run without any boundary mask; only the sequence's last, partial
block masks its missing keys (VL-BERT's rows are 64-256 tokens: one to four blocks, so the mask would otherwise run
on every block). Dropout zeroes probabilities of the undropped sum l (module docstring of attention_common.py for
the draws); the kept ones' scale 256 / (256 - threshold) multiplies the output once, with 1/l. The log2-sum-exp2 of
each row, m + log2(l), is stored for the backward.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .attention_common import (
    _dropout_draws,
    _dropout_keep,
    _dropout_zero_pairs,
    _load_rows,
    _sequence_block,
    launch_args,
)
from .utils import attention_configs, prune_attention_configs

AUTOTUNE_KEY = ["seq_bucket", "BLOCK_D", "MASK_D", "HAS_DROPOUT", "DOT_PRECISION"]


@triton.jit
def _fwd_step(
    acc,  # [BLOCK_M, BLOCK_D] fp32 output accumulator
    m_i,  # [BLOCK_M] fp32 running maximum of the scores (log2 units)
    l_i,  # [BLOCK_M] fp32 running sum of exp2(scores - m_i), before dropout
    q,  # [BLOCK_M, BLOCK_D], or for "ieee" the queries' pointer (query i at q + i * stride_qt)
    k_ptr,  # this sequence's and head's keys: key j at k_ptr + j * stride_kt
    v_ptr,  # this sequence's and head's values
    stride_qt,
    stride_kt,
    stride_vt,
    n0,  # first key of the block
    seqlen,
    offs_n,  # [BLOCK_N] arange
    offs_d,  # [BLOCK_D] arange
    d_valid,  # [BLOCK_D]
    qk_scale,
    rng_base,
    row0,  # first query of the block
    max_seqlen,
    keep_threshold,
    seed,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MASKED: tl.constexpr,  # the sequence's last, partial key block: mask the keys past its end
    MASK_D: tl.constexpr,
    HAS_DROPOUT: tl.constexpr,
    PTX_DROPOUT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """One key block of the online softmax (Dao 2023, algorithm 1, lines 6-11)."""
    if DOT_PRECISION == "ieee":  # FMA dots hold operands in registers: reload the queries (L1 hits), do not keep them
        q = _load_rows(q, row0 + tl.arange(0, BLOCK_M), offs_d, stride_qt, seqlen, d_valid, True, MASK_D)
    cols = n0 + offs_n
    k = _load_rows(k_ptr, cols, offs_d, stride_kt, seqlen, d_valid, MASKED, MASK_D)
    v = _load_rows(v_ptr, cols, offs_d, stride_vt, seqlen, d_valid, MASKED, MASK_D)
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
    if MASKED:
        s = tl.where((cols < seqlen)[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1) * qk_scale)  # every row has a valid key, so m_new is finite
    p = tl.exp2(s * qk_scale - m_new[:, None])
    alpha = tl.exp2(m_i - m_new)  # 0 on the first block (m_i = -inf)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None]
    if HAS_DROPOUT and PTX_DROPOUT:  # bf16/fp16, compiled: the 16-bit values masked in pairs (attention_common.py)
        words = _dropout_draws(rng_base, row0, n0, max_seqlen, seed, BLOCK_M, BLOCK_N, False)
        p = _dropout_zero_pairs(p.to(v.dtype), words, keep_threshold)
    elif HAS_DROPOUT:
        keep = _dropout_keep(rng_base, row0, n0, max_seqlen, keep_threshold, seed, BLOCK_M, BLOCK_N)
        # A zero LLVM cannot fold keeps this select on the fp32 values (FSEL); with a literal 0 it is moved past
        # the bf16 conversion and costs a byte permute and a select per element.
        p = tl.where(keep, p, (l_i * 0.0)[:, None])
    acc += tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return acc, m_new, l_i


@triton.autotune(configs=attention_configs("fwd"), key=AUTOTUNE_KEY,
                 prune_configs_by={"early_config_prune": prune_attention_configs("fwd")})  # fmt: skip
@triton.jit
def _attn_fwd_kernel(
    out_ptr,  # output, [T, heads, D] token stride stride_ot, head stride stride_oh
    lse_ptr,  # output, [heads, T] fp32 log2-sum-exp2 of each query row (scores in log2 units)
    q_ptr,  # [T, heads, D] token stride stride_qt, head stride stride_qh, last dim contiguous
    k_ptr,  # [T, heads, D] strides stride_kt, stride_kh
    v_ptr,  # [T, heads, D] strides stride_vt, stride_vh
    cu_seqlens_ptr,  # [B+1] int32 first token of each sequence, then T
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_ot,
    stride_oh,
    total,  # T
    head_dim,  # D
    max_seqlen,  # longest sequence: row blocks per sequence, dropout counter stride
    seq_bucket,  # autotune key only (sequence_bucket(max_seqlen))
    qk_scale,  # softmax_scale * log2(e)
    keep_threshold,  # dropout: a byte draw >= this keeps its element (0: no dropout)
    dropout_scale,  # 256 / (256 - keep_threshold), computed once on the host as the reference does
    seed_ptr,  # [1] int64 dropout Philox key, read on the device (no host sync; fresh per CUDA-graph replay)
    rng_offset,  # dropout counter offset
    BLOCK_M: tl.constexpr,  # query rows per program, a multiple of 16
    BLOCK_N: tl.constexpr,  # key rows per step, a multiple of 32
    BLOCK_D: tl.constexpr,  # head dimension padded to a power of two >= 16
    MASK_D: tl.constexpr,  # head_dim < BLOCK_D
    HAS_DROPOUT: tl.constexpr,  # keep_threshold > 0
    PTX_DROPOUT: tl.constexpr,  # 16-bit inputs, compiled: the mask applied by PTX (kernels/attention_common.py)
    DOT_PRECISION: tl.constexpr,  # fp32 inputs: "tf32" (tensor cores) or "ieee"; 16-bit inputs ignore it
):
    """One block of queries of one sequence and one head (module docstring; Dao 2023, algorithm 1)."""
    seed = tl.load(seed_ptr) if HAS_DROPOUT else 0
    start, seqlen, block_m = _sequence_block(cu_seqlens_ptr, max_seqlen, BLOCK_M)
    if block_m * BLOCK_M >= seqlen:
        return
    head = tl.program_id(1).to(tl.int64)
    q_ptr += start * stride_qt + head * stride_qh
    k_ptr += start * stride_kt + head * stride_kh
    v_ptr += start * stride_vt + head * stride_vh
    rng_base = (rng_offset + (head * total + start) * max_seqlen).to(tl.int32)
    row0 = block_m * BLOCK_M
    offs_m = row0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_valid = offs_d < head_dim
    if DOT_PRECISION == "ieee":
        q = q_ptr  # loaded in each step (_fwd_step)
    else:
        q = _load_rows(q_ptr, offs_m, offs_d, stride_qt, seqlen, d_valid, True, MASK_D)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for n0 in range(0, seqlen - seqlen % BLOCK_N, BLOCK_N):  # the full key blocks
        acc, m_i, l_i = _fwd_step(
            acc, m_i, l_i, q, k_ptr, v_ptr, stride_qt, stride_kt, stride_vt, n0, seqlen, offs_n, offs_d, d_valid,
            qk_scale, rng_base, row0, max_seqlen, keep_threshold, seed, BLOCK_M, BLOCK_N, False, MASK_D, HAS_DROPOUT,
            PTX_DROPOUT, DOT_PRECISION,
        )  # fmt: skip
    if seqlen % BLOCK_N:
        acc, m_i, l_i = _fwd_step(
            acc, m_i, l_i, q, k_ptr, v_ptr, stride_qt, stride_kt, stride_vt, seqlen - seqlen % BLOCK_N, seqlen, offs_n,
            offs_d, d_valid, qk_scale, rng_base, row0, max_seqlen, keep_threshold, seed, BLOCK_M, BLOCK_N, True, MASK_D,
            HAS_DROPOUT, PTX_DROPOUT, DOT_PRECISION,
        )  # fmt: skip
    out = acc * (dropout_scale / l_i)[:, None]
    out_ptr += start * stride_ot + head * stride_oh
    out_mask = (offs_m < seqlen)[:, None] & d_valid[None, :]
    tl.store(out_ptr + offs_m[:, None] * stride_ot + offs_d[None, :], out.to(out_ptr.dtype.element_ty), mask=out_mask)
    tl.store(lse_ptr + head * total + start + offs_m, m_i + tl.log2(l_i), mask=offs_m < seqlen)


# ---------------------------------------------------------------------------------------------------------------------
# host launchers


def attention_forward(
    q: torch.Tensor,  # [T, heads, D], last dim contiguous, any token/head strides
    k: torch.Tensor,  # [T, heads, D]
    v: torch.Tensor,  # [T, heads, D]
    cu_seqlens: torch.Tensor,  # [B+1] int32
    max_seqlen: int,
    softmax_scale: float,
    keep_threshold: int,  # 0: no dropout
    dropout_scale: float,
    seed: torch.Tensor | int,  # [1] int64 on the device (or an int, copied there)
    offset: int,
    precision: str,  # "tf32" or "ieee" (fp32 inputs)
) -> tuple[torch.Tensor, torch.Tensor]:  # out [T, heads, D] in q's dtype, lse [heads, T] fp32
    total, heads, head_dim = q.shape
    out = torch.empty((total, heads, head_dim), dtype=q.dtype, device=q.device)
    lse = torch.empty((heads, total), dtype=torch.float32, device=q.device)
    batch = cu_seqlens.shape[0] - 1
    if total == 0 or batch == 0:
        return out, lse
    scalars = launch_args(q, max_seqlen, softmax_scale, keep_threshold, seed, offset, precision)
    grid = lambda meta: (batch * triton.cdiv(max_seqlen, meta["BLOCK_M"]), heads)  # noqa: E731
    _attn_fwd_kernel[grid](
        out, lse, q, k, v, cu_seqlens,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        dropout_scale=dropout_scale, **scalars,
    )  # fmt: skip
    return out, lse
