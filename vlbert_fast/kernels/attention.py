"""Variable-length (packed) attention in Triton, FlashAttention-2 style: forward and backward, online softmax,
seeded dropout, fp32 statistics.

The op, its arguments and its reference are specified in `vlbert_fast/ops/attention.py`; this module holds the
kernels, their host launchers and the autograd wrapper (STYLE.md: three layers).

Layout: q, k, v and the output are [T, heads, D] over the packed tokens of B sequences; sequence b holds tokens
cu_seqlens[b] .. cu_seqlens[b+1] and attends to itself only. Every program owns one block of rows of one sequence
and one head: grid axis 0 runs over (sequence, row block) pairs, axis 1 over heads. Row blocks past the end of a
short sequence exit at once, so the grid is sized by the longest sequence without computing on padding.

Forward (Dao 2023, "FlashAttention-2", algorithm 1): a block of BLOCK_M queries walks the keys of its sequence in
blocks of BLOCK_N, keeping the running maximum m and sum l of exp(scores) in fp32 and rescaling the fp32 output
accumulator whenever m grows. Scores are kept in log2 units (softmax_scale * log2(e) folded into one multiplier) so
exp2 does the exponentials. Dropout multiplies the normalised probabilities, so l sums the undropped ones. The
log2-sum-exp2 of each row, m + log2(l), is stored for the backward.

Backward (algorithm 2, split in two kernels so neither needs atomics and the gradients are bitwise reproducible):
- preprocess: delta_i = sum_d dO_id O_id (= sum_j P_ij dP_ij, also under dropout, because O is the dropped P
  times V);
- dK, dV: a block of keys walks the queries of its sequence, recomputing P from the stored statistics:
  dV += P_drop^T dO, dS = P * (drop(dO V^T) - delta), dK += dS^T Q;
- dQ: a block of queries walks the keys: dQ += dS K.
The dropout mask is recomputed from the seed in each kernel (tl.rand; module docstring of ops/attention.py gives
the counter of each element), never stored.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .utils import attention_configs, attention_head_block, sequence_bucket

LOG2_E = 1.4426950408889634  # exp(x) = exp2(x * log2(e))


@triton.jit
def _attn_dropout_keep(
    rng_base,  # int32 scalar: counter of (this head, the sequence's first query, key 0)
    rows,  # int32, broadcastable: query position within its sequence
    cols,  # int32, broadcastable to rows: key position within its sequence
    max_seqlen,  # stride of a query row in the counter space
    dropout_p,  # drop probability
    seed,  # Philox key
):
    """Keep mask: element (head h, query token i of the packed stream, key position j) draws
    tl.rand(seed, offset + (h * T + i) * max_seqlen + j); rng_base holds the part common to the program's tile.
    The host checks that the largest counter fits in int32, so the tile arithmetic stays 32-bit and tl.rand takes
    its 32-bit path in every Triton version; `attention_dropout_keep` in ops/attention.py is the PyTorch twin."""
    return tl.rand(seed, rng_base + rows * max_seqlen + cols) >= dropout_p


@triton.jit
def _sequence_block(
    cu_seqlens_ptr,  # [B+1] int32
    max_seqlen,  # blocks per sequence = cdiv(max_seqlen, BLOCK)
    BLOCK: tl.constexpr,  # rows per block along grid axis 0
):
    """(first token int64, length int32, block index int32) of this program's (sequence, block) pair. Offsets
    within a sequence stay int32 (the host checks max_seqlen x token stride < 2**31); only the per-program base
    pointers are 64-bit, which keeps the tiles' address registers at half the width."""
    pid = tl.program_id(0).to(tl.int64)
    num_blocks = tl.cdiv(max_seqlen, BLOCK)
    seq = pid // num_blocks
    start = tl.load(cu_seqlens_ptr + seq)
    seqlen = tl.load(cu_seqlens_ptr + seq + 1) - start
    return start.to(tl.int64), seqlen, (pid % num_blocks).to(tl.int32)


@triton.autotune(configs=attention_configs("fwd"), key=["seq_bucket", "BLOCK_D", "HAS_DROPOUT", "DOT_PRECISION"])
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
    dropout_p,  # drop probability
    dropout_scale,  # 1 / (1 - p), computed once on the host as the reference does
    seed,  # dropout Philox key
    rng_offset,  # dropout counter offset
    BLOCK_M: tl.constexpr,  # query rows per program
    BLOCK_N: tl.constexpr,  # key rows per step
    BLOCK_D: tl.constexpr,  # head dimension padded to a power of two >= 16
    HAS_DROPOUT: tl.constexpr,  # p > 0
    DOT_PRECISION: tl.constexpr,  # "ieee" for fp32 inputs (no TF32 rounding), "tf32" (unused) for 16-bit ones
):
    """One block of queries of one sequence and one head (module docstring; Dao 2023, algorithm 1)."""
    start, seqlen, block_m = _sequence_block(cu_seqlens_ptr, max_seqlen, BLOCK_M)
    if block_m * BLOCK_M >= seqlen:
        return
    head = tl.program_id(1).to(tl.int64)
    q_ptr += start * stride_qt + head * stride_qh
    k_ptr += start * stride_kt + head * stride_kh
    v_ptr += start * stride_vt + head * stride_vh
    rng_base = (rng_offset + (head * total + start) * max_seqlen).to(tl.int32)
    offs_m = block_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    m_valid = offs_m < seqlen
    d_valid = offs_d < head_dim
    q_mask = m_valid[:, None] & d_valid[None, :]
    q = tl.load(q_ptr + offs_m[:, None] * stride_qt + offs_d[None, :], mask=q_mask, other=0.0)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for n0 in range(0, seqlen, BLOCK_N):
        cols = n0 + offs_n
        n_valid = cols < seqlen
        kv_mask = n_valid[:, None] & d_valid[None, :]
        k = tl.load(k_ptr + cols[:, None] * stride_kt + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_ptr + cols[:, None] * stride_vt + offs_d[None, :], mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        s = tl.where(n_valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)  # 0 on the first step (m_i = -inf); every valid row has a finite m_new
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None]
        if HAS_DROPOUT:
            keep = _attn_dropout_keep(rng_base, offs_m[:, None], cols[None, :], max_seqlen, dropout_p, seed)
            p = tl.where(keep, p * dropout_scale, 0.0)
        acc += tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new
    out = acc / l_i[:, None]
    out_ptr += start * stride_ot + head * stride_oh
    tl.store(
        out_ptr + offs_m[:, None] * stride_ot + offs_d[None, :],
        out.to(out_ptr.dtype.element_ty),
        mask=q_mask,
    )
    tl.store(lse_ptr + head * total + start + offs_m, m_i + tl.log2(l_i), mask=m_valid)


@triton.jit
def _attn_bwd_preprocess_kernel(
    delta_ptr,  # output, [heads, T] fp32 rowsum(dO * O)
    out_ptr,  # [T, heads, D] strides stride_ot, stride_oh
    grad_out_ptr,  # [T, heads, D] strides stride_gt, stride_gh
    stride_ot,
    stride_oh,
    stride_gt,
    stride_gh,
    total,  # T
    head_dim,  # D
    BLOCK_T: tl.constexpr,  # tokens per program
    BLOCK_D: tl.constexpr,
):
    """delta = rowsum(dO * O) per token and head, in fp32 (the softmax backward's correction term)."""
    pid = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1).to(tl.int64)
    rows = pid * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (rows < total)[:, None] & (offs_d < head_dim)[None, :]
    o = tl.load(out_ptr + rows[:, None] * stride_ot + head * stride_oh + offs_d[None, :], mask=mask, other=0.0)
    do = tl.load(grad_out_ptr + rows[:, None] * stride_gt + head * stride_gh + offs_d[None, :], mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(delta_ptr + head * total + rows, delta, mask=rows < total)


@triton.autotune(configs=attention_configs("bwd"), key=["seq_bucket", "BLOCK_D", "HAS_DROPOUT", "DOT_PRECISION"])
@triton.jit
def _attn_bwd_dkdv_kernel(
    grad_k_ptr,  # output, [T, heads, D] token stride stride_dt, head stride stride_dh
    grad_v_ptr,  # output, [T, heads, D] the same strides
    q_ptr,  # [T, heads, D] strides stride_qt, stride_qh
    k_ptr,  # [T, heads, D] strides stride_kt, stride_kh
    v_ptr,  # [T, heads, D] strides stride_vt, stride_vh
    grad_out_ptr,  # [T, heads, D] strides stride_gt, stride_gh
    lse_ptr,  # [heads, T] fp32 from the forward
    delta_ptr,  # [heads, T] fp32 from the preprocess
    cu_seqlens_ptr,  # [B+1] int32
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_gt,
    stride_gh,
    stride_dt,
    stride_dh,
    total,  # T
    head_dim,  # D
    max_seqlen,
    seq_bucket,  # autotune key only
    qk_scale,  # softmax_scale * log2(e)
    softmax_scale,  # dS is the gradient of the scaled scores: dK = softmax_scale * dS^T Q
    dropout_p,
    dropout_scale,
    seed,
    rng_offset,
    BLOCK_M: tl.constexpr,  # query rows per step
    BLOCK_N: tl.constexpr,  # key rows per program
    BLOCK_D: tl.constexpr,
    HAS_DROPOUT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """One block of keys of one sequence and one head; the transposed tiles (keys x queries) keep the reductions
    over queries on the tl.dot's inner dimension (Dao 2023, algorithm 2, the outer loop over key blocks)."""
    start, seqlen, block_n = _sequence_block(cu_seqlens_ptr, max_seqlen, BLOCK_N)
    if block_n * BLOCK_N >= seqlen:
        return
    head = tl.program_id(1).to(tl.int64)
    q_ptr += start * stride_qt + head * stride_qh
    k_ptr += start * stride_kt + head * stride_kh
    v_ptr += start * stride_vt + head * stride_vh
    grad_out_ptr += start * stride_gt + head * stride_gh
    lse_ptr += head * total + start
    delta_ptr += head * total + start
    rng_base = (rng_offset + (head * total + start) * max_seqlen).to(tl.int32)
    offs_n = block_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    n_valid = offs_n < seqlen
    d_valid = offs_d < head_dim
    kv_mask = n_valid[:, None] & d_valid[None, :]
    k = tl.load(k_ptr + offs_n[:, None] * stride_kt + offs_d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(v_ptr + offs_n[:, None] * stride_vt + offs_d[None, :], mask=kv_mask, other=0.0)
    dk = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    for m0 in range(0, seqlen, BLOCK_M):
        rows = m0 + offs_m
        m_valid = rows < seqlen
        q_mask = m_valid[:, None] & d_valid[None, :]
        q = tl.load(q_ptr + rows[:, None] * stride_qt + offs_d[None, :], mask=q_mask, other=0.0)
        do = tl.load(grad_out_ptr + rows[:, None] * stride_gt + offs_d[None, :], mask=q_mask, other=0.0)
        lse = tl.load(lse_ptr + rows, mask=m_valid, other=0.0)
        delta = tl.load(delta_ptr + rows, mask=m_valid, other=0.0)
        s_t = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * qk_scale  # [BLOCK_N, BLOCK_M]
        p_t = tl.exp2(s_t - lse[None, :])
        p_t = tl.where(n_valid[:, None] & m_valid[None, :], p_t, 0.0)
        dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
        if HAS_DROPOUT:
            keep_t = _attn_dropout_keep(rng_base, rows[None, :], offs_n[:, None], max_seqlen, dropout_p, seed)
            dv += tl.dot(tl.where(keep_t, p_t * dropout_scale, 0.0).to(do.dtype), do, input_precision=DOT_PRECISION)
            dp_t = tl.where(keep_t, dp_t * dropout_scale, 0.0)
        else:
            dv += tl.dot(p_t.to(do.dtype), do, input_precision=DOT_PRECISION)
        ds_t = p_t * (dp_t - delta[None, :])
        dk += tl.dot(ds_t.to(q.dtype), q, input_precision=DOT_PRECISION)
    out_offsets = offs_n[:, None] * stride_dt + offs_d[None, :]
    base = start * stride_dt + head * stride_dh
    tl.store(grad_k_ptr + base + out_offsets, (dk * softmax_scale).to(grad_k_ptr.dtype.element_ty), mask=kv_mask)
    tl.store(grad_v_ptr + base + out_offsets, dv.to(grad_v_ptr.dtype.element_ty), mask=kv_mask)


@triton.autotune(configs=attention_configs("bwd"), key=["seq_bucket", "BLOCK_D", "HAS_DROPOUT", "DOT_PRECISION"])
@triton.jit
def _attn_bwd_dq_kernel(
    grad_q_ptr,  # output, [T, heads, D] token stride stride_dt, head stride stride_dh
    q_ptr,  # [T, heads, D] strides stride_qt, stride_qh
    k_ptr,  # [T, heads, D] strides stride_kt, stride_kh
    v_ptr,  # [T, heads, D] strides stride_vt, stride_vh
    grad_out_ptr,  # [T, heads, D] strides stride_gt, stride_gh
    lse_ptr,  # [heads, T] fp32
    delta_ptr,  # [heads, T] fp32
    cu_seqlens_ptr,  # [B+1] int32
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_gt,
    stride_gh,
    stride_dt,
    stride_dh,
    total,  # T
    head_dim,  # D
    max_seqlen,
    seq_bucket,  # autotune key only
    qk_scale,
    softmax_scale,
    dropout_p,
    dropout_scale,
    seed,
    rng_offset,
    BLOCK_M: tl.constexpr,  # query rows per program
    BLOCK_N: tl.constexpr,  # key rows per step
    BLOCK_D: tl.constexpr,
    HAS_DROPOUT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """One block of queries of one sequence and one head: dQ = softmax_scale * sum over key blocks of dS K."""
    start, seqlen, block_m = _sequence_block(cu_seqlens_ptr, max_seqlen, BLOCK_M)
    if block_m * BLOCK_M >= seqlen:
        return
    head = tl.program_id(1).to(tl.int64)
    q_ptr += start * stride_qt + head * stride_qh
    k_ptr += start * stride_kt + head * stride_kh
    v_ptr += start * stride_vt + head * stride_vh
    grad_out_ptr += start * stride_gt + head * stride_gh
    rng_base = (rng_offset + (head * total + start) * max_seqlen).to(tl.int32)
    offs_m = block_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    m_valid = offs_m < seqlen
    d_valid = offs_d < head_dim
    q_mask = m_valid[:, None] & d_valid[None, :]
    q = tl.load(q_ptr + offs_m[:, None] * stride_qt + offs_d[None, :], mask=q_mask, other=0.0)
    do = tl.load(grad_out_ptr + offs_m[:, None] * stride_gt + offs_d[None, :], mask=q_mask, other=0.0)
    lse = tl.load(lse_ptr + head * total + start + offs_m, mask=m_valid, other=0.0)
    delta = tl.load(delta_ptr + head * total + start + offs_m, mask=m_valid, other=0.0)
    dq = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for n0 in range(0, seqlen, BLOCK_N):
        cols = n0 + offs_n
        n_valid = cols < seqlen
        kv_mask = n_valid[:, None] & d_valid[None, :]
        k = tl.load(k_ptr + cols[:, None] * stride_kt + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_ptr + cols[:, None] * stride_vt + offs_d[None, :], mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        p = tl.exp2(s - lse[:, None])
        p = tl.where(m_valid[:, None] & n_valid[None, :], p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
        if HAS_DROPOUT:
            keep = _attn_dropout_keep(rng_base, offs_m[:, None], cols[None, :], max_seqlen, dropout_p, seed)
            dp = tl.where(keep, dp * dropout_scale, 0.0)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION)
    grad_q_ptr += start * stride_dt + head * stride_dh
    out_offsets = offs_m[:, None] * stride_dt + offs_d[None, :]
    tl.store(grad_q_ptr + out_offsets, (dq * softmax_scale).to(grad_q_ptr.dtype.element_ty), mask=q_mask)


# ---------------------------------------------------------------------------------------------------------------------
# host launchers


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    """The kernels take any token and head strides (q, k, v as views of one fused QKV projection) but need the
    head dimension contiguous."""
    return t if t.stride(-1) == 1 else t.contiguous()


def _launch_args(q: torch.Tensor, max_seqlen: int, softmax_scale: float, dropout_p: float, seed: int,
                 offset: int) -> dict:  # fmt: skip
    """The scalar and constexpr arguments every attention kernel takes, by name."""
    return dict(
        total=q.shape[0],
        head_dim=q.shape[2],
        max_seqlen=max_seqlen,
        seq_bucket=sequence_bucket(max_seqlen),
        qk_scale=softmax_scale * LOG2_E,
        dropout_p=float(dropout_p),
        dropout_scale=1.0 / (1.0 - dropout_p) if dropout_p > 0 else 1.0,
        seed=seed,
        rng_offset=offset,
        BLOCK_D=attention_head_block(q.shape[2]),
        HAS_DROPOUT=dropout_p > 0,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
    )


def attention_forward(
    q: torch.Tensor,  # [T, heads, D]
    k: torch.Tensor,  # [T, heads, D]
    v: torch.Tensor,  # [T, heads, D]
    cu_seqlens: torch.Tensor,  # [B+1] int32
    max_seqlen: int,
    softmax_scale: float,
    dropout_p: float,
    seed: int,
    offset: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # out [T, heads, D] in q's dtype, lse [heads, T] fp32
    total, heads, head_dim = q.shape
    q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    out = torch.empty((total, heads, head_dim), dtype=q.dtype, device=q.device)
    lse = torch.empty((heads, total), dtype=torch.float32, device=q.device)
    batch = cu_seqlens.shape[0] - 1
    if total == 0 or batch == 0:
        return out, lse
    grid = lambda meta: (batch * triton.cdiv(max_seqlen, meta["BLOCK_M"]), heads)  # noqa: E731
    _attn_fwd_kernel[grid](
        out, lse, q, k, v, cu_seqlens,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        **_launch_args(q, max_seqlen, softmax_scale, dropout_p, seed, offset),
    )  # fmt: skip
    return out, lse


def attention_backward(
    grad_out: torch.Tensor,  # [T, heads, D]
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,  # the forward's output
    lse: torch.Tensor,  # [heads, T] fp32 from the forward
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    softmax_scale: float,
    dropout_p: float,
    seed: int,
    offset: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # dq, dk, dv: [T, heads, D] contiguous, in q's dtype
    total, heads, head_dim = q.shape
    q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    grad_out = grad_out.contiguous()  # token stride heads * D, as the outputs': within the dispatch's 32-bit bound
    grad_q, grad_k, grad_v = (torch.empty((total, heads, head_dim), dtype=q.dtype, device=q.device) for _ in "qkv")
    batch = cu_seqlens.shape[0] - 1
    if total == 0 or batch == 0:
        return grad_q, grad_k, grad_v
    block_d = attention_head_block(head_dim)
    delta = torch.empty((heads, total), dtype=torch.float32, device=q.device)
    block_t = max(1, min(64, 4096 // block_d))  # a 4096-element tile per program: enough loads in flight
    _attn_bwd_preprocess_kernel[(triton.cdiv(total, block_t), heads)](
        delta, out, grad_out, out.stride(0), out.stride(1), grad_out.stride(0), grad_out.stride(1), total, head_dim,
        BLOCK_T=block_t, BLOCK_D=block_d,
    )  # fmt: skip
    strides = (q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1))
    strides += (grad_out.stride(0), grad_out.stride(1), grad_q.stride(0), grad_q.stride(1))
    scalars = dict(**_launch_args(q, max_seqlen, softmax_scale, dropout_p, seed, offset), softmax_scale=softmax_scale)
    grid_n = lambda meta: (batch * triton.cdiv(max_seqlen, meta["BLOCK_N"]), heads)  # noqa: E731
    _attn_bwd_dkdv_kernel[grid_n](grad_k, grad_v, q, k, v, grad_out, lse, delta, cu_seqlens, *strides, **scalars)
    grid_m = lambda meta: (batch * triton.cdiv(max_seqlen, meta["BLOCK_M"]), heads)  # noqa: E731
    _attn_bwd_dq_kernel[grid_m](grad_q, q, k, v, grad_out, lse, delta, cu_seqlens, *strides, **scalars)
    return grad_q, grad_k, grad_v


# ---------------------------------------------------------------------------------------------------------------------
# autograd


class VarlenAttentionFunction(torch.autograd.Function):
    """(q, k, v, cu_seqlens, max_seqlen, softmax_scale, dropout_p, seed, offset) -> out; differentiable in q, k, v."""

    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens, max_seqlen, softmax_scale, dropout_p, seed, offset):
        out, lse = attention_forward(q, k, v, cu_seqlens, max_seqlen, softmax_scale, dropout_p, seed, offset)
        ctx.save_for_backward(q, k, v, out, lse, cu_seqlens)
        ctx.args = (max_seqlen, softmax_scale, dropout_p, seed, offset)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, cu_seqlens = ctx.saved_tensors
        grads = attention_backward(grad_out, q, k, v, out, lse, cu_seqlens, *ctx.args)
        return (*grads, None, None, None, None, None, None)
