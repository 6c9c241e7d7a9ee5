"""The backward of the packed attention (kernels/attention.py), FlashAttention-2's algorithm 2 split in two kernels
so neither needs atomics and the gradients are bitwise reproducible:

- preprocess: delta_i = sum_d dO_id O_id (= sum_j P_ij dP_ij, also under dropout, because O is the dropped P times
  V), stored divided by the dropout scale s;
- dK, dV: a block of keys walks the queries of its sequence, recomputing P from the forward's log2-sum-exp2:
  dV += (M * P)^T dO, dS' = P * (M * (dO V^T) - delta / s), dK += dS'^T Q; both are multiplied by s (and dK by
  softmax_scale) once at the end, so no per-element scaling runs in the loop;
- dQ: a block of queries walks the keys: dQ += dS' K, times s * softmax_scale at the end.

M is the keep mask of kernels/attention_common.py, recomputed from the seed and never stored. Every kernel computes
its score tile as queries x keys, as the forward does (so the mask comes from the same code and its Philox calls
stay within a thread); the dK/dV kernel feeds P^T and dS'^T to its matrix products through shared memory
(stmatrix), which costs fewer instructions than recomputing the mask in a transposed layout. Like the forward, full
blocks run without boundary masks: in the dK/dV kernel the missing queries of the last block read lse = +inf, so
their P is exactly 0 with no select at all.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .attention_common import (
    _dropout_draws,
    _dropout_draws_by_element,
    _dropout_keep,
    _dropout_select,
    _load_rows,
    _sequence_block,
    launch_args,
)
from .utils import attention_configs, attention_head_block, prune_attention_configs

AUTOTUNE_KEY = ["seq_bucket", "BLOCK_D", "MASK_D", "HAS_DROPOUT", "DOT_PRECISION"]


@triton.jit
def _attn_bwd_preprocess_kernel(
    delta_ptr,  # output, [heads, T] fp32 rowsum(dO * O) * delta_scale
    out_ptr,  # [T, heads, D] strides stride_ot, stride_oh
    grad_out_ptr,  # [T, heads, D] strides stride_gt, stride_gh
    stride_ot,
    stride_oh,
    stride_gt,
    stride_gh,
    total,  # T
    head_dim,  # D
    delta_scale,  # 1 / dropout scale
    BLOCK_T: tl.constexpr,  # tokens per program
    BLOCK_D: tl.constexpr,
):
    """delta = rowsum(dO * O) / s per token and head, in fp32 (the softmax backward's correction term)."""
    pid = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1).to(tl.int64)
    rows = pid * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (rows < total)[:, None] & (offs_d < head_dim)[None, :]
    o = tl.load(out_ptr + rows[:, None] * stride_ot + head * stride_oh + offs_d[None, :], mask=mask, other=0.0)
    do = tl.load(grad_out_ptr + rows[:, None] * stride_gt + head * stride_gh + offs_d[None, :], mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1) * delta_scale
    tl.store(delta_ptr + head * total + rows, delta, mask=rows < total)


@triton.jit
def _dkdv_step(
    dk,  # [BLOCK_N, BLOCK_D] fp32
    dv,  # [BLOCK_N, BLOCK_D] fp32
    k,  # [BLOCK_N, BLOCK_D] this program's keys
    v,  # [BLOCK_N, BLOCK_D]
    q_ptr,  # this sequence's and head's queries: query i at q_ptr + i * stride_qt
    grad_out_ptr,  # dO, the same way
    lse_ptr,  # [seqlen] fp32 of this sequence and head
    delta_ptr,  # [seqlen] fp32
    stride_qt,
    stride_gt,
    m0,  # first query of the block
    seqlen,
    offs_m,
    offs_d,
    d_valid,
    qk_scale,
    rng_base,
    col0,  # first key of this program
    max_seqlen,
    keep_threshold,
    seed,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MASKED: tl.constexpr,  # the sequence's last, partial query block
    MASK_D: tl.constexpr,
    HAS_DROPOUT: tl.constexpr,
    PTX_DROPOUT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """One query block of the key block's gradients (Dao 2023, algorithm 2, lines 8-21)."""
    rows = m0 + offs_m
    q = _load_rows(q_ptr, rows, offs_d, stride_qt, seqlen, d_valid, MASKED, MASK_D)
    do = _load_rows(grad_out_ptr, rows, offs_d, stride_gt, seqlen, d_valid, MASKED, MASK_D)
    if MASKED:  # missing queries: lse = +inf makes their P exactly 0
        lse = tl.load(lse_ptr + rows, mask=rows < seqlen, other=float("inf"))
        delta = tl.load(delta_ptr + rows, mask=rows < seqlen, other=0.0)
    else:
        lse = tl.load(lse_ptr + rows)
        delta = tl.load(delta_ptr + rows)
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)  # [BLOCK_M, BLOCK_N]
    p = tl.exp2(s * qk_scale - lse[:, None])
    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
    if HAS_DROPOUT:
        # One select serves both products: with the kept probabilities kept = M * P, dS' = P * (M * dP - delta) =
        # kept * dP - P * delta (a multiply and an FMA, as P * (dP - delta) costs without dropout).
        # The FMA tiles of 16 queries draw each element's word in place; measured on the scorecard, every other tile
        # does better with the joined words (_dropout_draws).
        if BLOCK_M < 64 and DOT_PRECISION == "ieee":
            words = _dropout_draws_by_element(rng_base, m0, col0, max_seqlen, seed, BLOCK_M, BLOCK_N)
        else:
            words = _dropout_draws(rng_base, m0, col0, max_seqlen, seed, BLOCK_M, BLOCK_N, not PTX_DROPOUT)
        if PTX_DROPOUT:
            kept = _dropout_select(p, words, keep_threshold)
        else:
            zero = (delta * 0.0)[:, None]  # not foldable: the select stays on fp32 values (kernels/attention.py)
            kept = tl.where(words >= keep_threshold.to(tl.uint32) << 24, p, zero)
        pd = p * delta[:, None]
        dv += tl.dot(tl.trans(kept.to(do.dtype)), do, input_precision=DOT_PRECISION)
        ds = kept * dp - pd
    else:
        dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=DOT_PRECISION)
        ds = p * (dp - delta[:, None])
    dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=DOT_PRECISION)
    return dk, dv


@triton.autotune(configs=attention_configs("dkdv"), key=AUTOTUNE_KEY,
                 prune_configs_by={"early_config_prune": prune_attention_configs("dkdv")})  # fmt: skip
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
    k_out_scale,  # softmax_scale * dropout scale: dK = softmax_scale * s * dS'^T Q
    v_out_scale,  # dropout scale
    keep_threshold,
    seed_ptr,  # [1] int64 dropout Philox key, read on the device (no host sync; fresh per CUDA-graph replay)
    rng_offset,
    BLOCK_M: tl.constexpr,  # query rows per step, a multiple of 16
    BLOCK_N: tl.constexpr,  # key rows per program, a multiple of 32
    BLOCK_D: tl.constexpr,
    MASK_D: tl.constexpr,
    HAS_DROPOUT: tl.constexpr,
    PTX_DROPOUT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """One block of keys of one sequence and one head (Dao 2023, algorithm 2, the outer loop over key blocks)."""
    seed = tl.load(seed_ptr) if HAS_DROPOUT else 0
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
    col0 = block_n * BLOCK_N
    offs_n = col0 + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_valid = offs_d < head_dim
    k = _load_rows(k_ptr, offs_n, offs_d, stride_kt, seqlen, d_valid, True, MASK_D)
    v = _load_rows(v_ptr, offs_n, offs_d, stride_vt, seqlen, d_valid, True, MASK_D)
    dk = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    for m0 in range(0, seqlen - seqlen % BLOCK_M, BLOCK_M):  # the full query blocks
        dk, dv = _dkdv_step(
            dk, dv, k, v, q_ptr, grad_out_ptr, lse_ptr, delta_ptr, stride_qt, stride_gt, m0, seqlen, offs_m, offs_d,
            d_valid, qk_scale, rng_base, col0, max_seqlen, keep_threshold, seed, BLOCK_M, BLOCK_N, False, MASK_D,
            HAS_DROPOUT, PTX_DROPOUT, DOT_PRECISION,
        )  # fmt: skip
    if seqlen % BLOCK_M:
        dk, dv = _dkdv_step(
            dk, dv, k, v, q_ptr, grad_out_ptr, lse_ptr, delta_ptr, stride_qt, stride_gt, seqlen - seqlen % BLOCK_M,
            seqlen, offs_m, offs_d, d_valid, qk_scale, rng_base, col0, max_seqlen, keep_threshold, seed, BLOCK_M,
            BLOCK_N, True, MASK_D, HAS_DROPOUT, PTX_DROPOUT, DOT_PRECISION,
        )  # fmt: skip
    offsets = start * stride_dt + head * stride_dh + offs_n[:, None] * stride_dt + offs_d[None, :]
    mask = (offs_n < seqlen)[:, None] & d_valid[None, :]
    tl.store(grad_k_ptr + offsets, (dk * k_out_scale).to(grad_k_ptr.dtype.element_ty), mask=mask)
    tl.store(grad_v_ptr + offsets, (dv * v_out_scale).to(grad_v_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dq_step(
    dq,  # [BLOCK_M, BLOCK_D] fp32
    q,  # [BLOCK_M, BLOCK_D] this program's queries, or for "ieee" their pointer (query i at q + i * stride_qt)
    do,  # [BLOCK_M, BLOCK_D], or for "ieee" dO's pointer, the same way
    lse,  # [BLOCK_M] fp32
    delta,  # [BLOCK_M] fp32
    k_ptr,
    v_ptr,
    stride_qt,
    stride_gt,
    stride_kt,
    stride_vt,
    n0,  # first key of the block
    seqlen,
    offs_n,
    offs_d,
    d_valid,
    qk_scale,
    rng_base,
    row0,
    max_seqlen,
    keep_threshold,
    seed,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MASKED: tl.constexpr,  # the sequence's last, partial key block
    MASK_D: tl.constexpr,
    HAS_DROPOUT: tl.constexpr,
    PTX_DROPOUT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """One key block of the query block's gradient (Dao 2023, algorithm 2, lines 8-21 seen from the queries)."""
    if DOT_PRECISION == "ieee":  # FMA dots: reloaded each step (L1 hits) rather than held (the forward's reason)
        rows = row0 + tl.arange(0, BLOCK_M)
        q = _load_rows(q, rows, offs_d, stride_qt, seqlen, d_valid, True, MASK_D)
        do = _load_rows(do, rows, offs_d, stride_gt, seqlen, d_valid, True, MASK_D)
    cols = n0 + offs_n
    k = _load_rows(k_ptr, cols, offs_d, stride_kt, seqlen, d_valid, MASKED, MASK_D)
    v = _load_rows(v_ptr, cols, offs_d, stride_vt, seqlen, d_valid, MASKED, MASK_D)
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
    if HAS_DROPOUT and PTX_DROPOUT:  # drawn before the dP product: 4 instructions fewer per block than after it
        words = _dropout_draws(rng_base, row0, n0, max_seqlen, seed, BLOCK_M, BLOCK_N, False)
    p = tl.exp2(s * qk_scale - lse[:, None])
    if MASKED:
        p = tl.where((cols < seqlen)[None, :], p, 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
    if HAS_DROPOUT and PTX_DROPOUT:
        dp = _dropout_select(dp, words, keep_threshold)
    elif HAS_DROPOUT:
        keep = _dropout_keep(rng_base, row0, n0, max_seqlen, keep_threshold, seed, BLOCK_M, BLOCK_N)
        dp = tl.where(keep, dp, 0.0)
    ds = p * (dp - delta[:, None])
    dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION)
    return dq


@triton.autotune(configs=attention_configs("dq"), key=AUTOTUNE_KEY,
                 prune_configs_by={"early_config_prune": prune_attention_configs("dq")})  # fmt: skip
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
    q_out_scale,  # softmax_scale * dropout scale
    keep_threshold,
    seed_ptr,  # [1] int64 dropout Philox key, read on the device (no host sync; fresh per CUDA-graph replay)
    rng_offset,
    BLOCK_M: tl.constexpr,  # query rows per program, a multiple of 16
    BLOCK_N: tl.constexpr,  # key rows per step, a multiple of 32
    BLOCK_D: tl.constexpr,
    MASK_D: tl.constexpr,
    HAS_DROPOUT: tl.constexpr,
    PTX_DROPOUT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """One block of queries of one sequence and one head: dQ = softmax_scale * s * sum over key blocks of dS' K."""
    seed = tl.load(seed_ptr) if HAS_DROPOUT else 0
    start, seqlen, block_m = _sequence_block(cu_seqlens_ptr, max_seqlen, BLOCK_M)
    if block_m * BLOCK_M >= seqlen:
        return
    head = tl.program_id(1).to(tl.int64)
    q_ptr += start * stride_qt + head * stride_qh
    k_ptr += start * stride_kt + head * stride_kh
    v_ptr += start * stride_vt + head * stride_vh
    grad_out_ptr += start * stride_gt + head * stride_gh
    rng_base = (rng_offset + (head * total + start) * max_seqlen).to(tl.int32)
    row0 = block_m * BLOCK_M
    offs_m = row0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_valid = offs_d < head_dim
    m_valid = offs_m < seqlen
    if DOT_PRECISION == "ieee":
        q = q_ptr  # loaded in each step (_dq_step)
        do = grad_out_ptr
    else:
        q = _load_rows(q_ptr, offs_m, offs_d, stride_qt, seqlen, d_valid, True, MASK_D)
        do = _load_rows(grad_out_ptr, offs_m, offs_d, stride_gt, seqlen, d_valid, True, MASK_D)
    lse = tl.load(lse_ptr + head * total + start + offs_m, mask=m_valid, other=float("inf"))
    delta = tl.load(delta_ptr + head * total + start + offs_m, mask=m_valid, other=0.0)
    dq = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for n0 in range(0, seqlen - seqlen % BLOCK_N, BLOCK_N):  # the full key blocks
        dq = _dq_step(
            dq, q, do, lse, delta, k_ptr, v_ptr, stride_qt, stride_gt, stride_kt, stride_vt, n0, seqlen, offs_n, offs_d,
            d_valid, qk_scale, rng_base, row0, max_seqlen, keep_threshold, seed, BLOCK_M, BLOCK_N, False, MASK_D,
            HAS_DROPOUT, PTX_DROPOUT, DOT_PRECISION,
        )  # fmt: skip
    if seqlen % BLOCK_N:
        dq = _dq_step(
            dq, q, do, lse, delta, k_ptr, v_ptr, stride_qt, stride_gt, stride_kt, stride_vt, seqlen - seqlen % BLOCK_N,
            seqlen, offs_n, offs_d, d_valid, qk_scale, rng_base, row0, max_seqlen, keep_threshold, seed, BLOCK_M,
            BLOCK_N, True, MASK_D, HAS_DROPOUT, PTX_DROPOUT, DOT_PRECISION,
        )  # fmt: skip
    offsets = start * stride_dt + head * stride_dh + offs_m[:, None] * stride_dt + offs_d[None, :]
    mask = m_valid[:, None] & d_valid[None, :]
    tl.store(grad_q_ptr + offsets, (dq * q_out_scale).to(grad_q_ptr.dtype.element_ty), mask=mask)


def attention_backward(
    grad_out: torch.Tensor,  # [T, heads, D]
    q: torch.Tensor,  # [T, heads, D] last dim contiguous, any token/head strides
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,  # the forward's output
    lse: torch.Tensor,  # [heads, T] fp32 from the forward
    cu_seqlens: torch.Tensor,
    grad_q: torch.Tensor,  # output, [T, heads, D], last dim contiguous (views of one [T, 3, heads, D] buffer allowed)
    grad_k: torch.Tensor,  # output, with grad_v's strides
    grad_v: torch.Tensor,  # output
    max_seqlen: int,
    softmax_scale: float,
    keep_threshold: int,
    dropout_scale: float,
    seed: torch.Tensor | int,  # [1] int64 on the device (or an int, copied there)
    offset: int,
    precision: str,
) -> None:
    """Writes dq, dk and dv into grad_q, grad_k and grad_v."""
    total, heads, head_dim = q.shape
    batch = cu_seqlens.shape[0] - 1
    if total == 0 or batch == 0:
        return
    if grad_k.stride() != grad_v.stride():
        raise ValueError(f"grad_k and grad_v must share strides, found {grad_k.stride()} and {grad_v.stride()}")
    grad_out = grad_out if grad_out.stride(-1) == 1 else grad_out.contiguous()
    block_d = attention_head_block(head_dim)
    delta = torch.empty((heads, total), dtype=torch.float32, device=q.device)
    block_t = max(1, min(64, 4096 // block_d))  # a 4096-element tile per program: enough loads in flight
    _attn_bwd_preprocess_kernel[(triton.cdiv(total, block_t), heads)](
        delta, out, grad_out, out.stride(0), out.stride(1), grad_out.stride(0), grad_out.stride(1), total, head_dim,
        1.0 / dropout_scale, BLOCK_T=block_t, BLOCK_D=block_d,
    )  # fmt: skip
    strides = (q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1))
    strides += (grad_out.stride(0), grad_out.stride(1))
    scalars = launch_args(q, max_seqlen, softmax_scale, keep_threshold, seed, offset, precision)
    grid_n = lambda meta: (batch * triton.cdiv(max_seqlen, meta["BLOCK_N"]), heads)  # noqa: E731
    _attn_bwd_dkdv_kernel[grid_n](
        grad_k, grad_v, q, k, v, grad_out, lse, delta, cu_seqlens, *strides, grad_k.stride(0), grad_k.stride(1),
        k_out_scale=softmax_scale * dropout_scale, v_out_scale=dropout_scale, **scalars,
    )  # fmt: skip
    grid_m = lambda meta: (batch * triton.cdiv(max_seqlen, meta["BLOCK_M"]), heads)  # noqa: E731
    _attn_bwd_dq_kernel[grid_m](
        grad_q, q, k, v, grad_out, lse, delta, cu_seqlens, *strides, grad_q.stride(0), grad_q.stride(1),
        q_out_scale=softmax_scale * dropout_scale, **scalars,
    )  # fmt: skip
