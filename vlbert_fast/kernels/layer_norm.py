"""Bias + dropout + residual + LayerNorm (the post-LN residual step) in Triton, forward and backward.

The op, its arguments and its reference are specified in `vlbert_fast/ops/layer_norm.py`; this module holds the
kernels and their host launchers; the autograd layer is the op's custom op (ops/library.py).

Forward, one tile of rows per program: s = residual + dropout(x + bias), y = LayerNorm(s). It writes y, the sum s
(in x's dtype: the only activation the backward needs, as much memory as the unfused graph keeps for the LayerNorm
input) and each row's mean and 1/std in fp32.

Backward, persistent programs that each walk a contiguous range of row tiles: LayerNorm backward from s, mean and
rstd; the residual's gradient is ds, x's is ds through the same dropout mask (recomputed from the seed, never
stored); the LayerNorm weight and bias gradients and the projection bias' gradient are summed per program in
registers and written as partial sums [programs, 3, H], added up on the host (no atomics).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .embedding import _dropout_keep
from .philox import seed_pointer
from .utils import (
    MAX_FUSED_HIDDEN,
    PERSISTENT_CTAS_PER_SM,
    persistent_max_registers,
    persistent_programs,
    row_block,
    row_warps,
    tile_rows,
)

PARTIAL_WEIGHT: tl.constexpr = tl.constexpr(0)  # rows of the backward's per-program partial sums
PARTIAL_LN_BIAS: tl.constexpr = tl.constexpr(1)
PARTIAL_BIAS: tl.constexpr = tl.constexpr(2)


@triton.jit
def _bdrln_fwd_kernel(
    y_ptr,  # output, [N, H] row stride stride_y
    sum_ptr,  # output, [N, H] contiguous, the pre-norm sum s in x's dtype (saved for the backward)
    mean_ptr,  # output, [N] fp32
    rstd_ptr,  # output, [N] fp32
    x_ptr,  # [N, H] row stride stride_x (a projection's output without its bias)
    bias_ptr,  # [H] the projection's bias (unused without HAS_BIAS)
    residual_ptr,  # [N, H] row stride stride_r
    weight_ptr,  # [H] LayerNorm gain
    ln_bias_ptr,  # [H] LayerNorm bias
    n_rows,  # N
    hidden,  # H
    stride_x,
    stride_r,
    stride_y,
    eps,
    dropout_p,  # drop probability
    dropout_scale,  # 1 / (1 - p), computed once on the host as the reference does
    seed_ptr,  # [1] int64 dropout Philox key, read on the device (no host sync; fresh per CUDA-graph replay)
    rng_offset,  # dropout counter of element (0, 0)
    ROWS: tl.constexpr,  # rows per program
    BLOCK_H: tl.constexpr,  # next power of two >= H
    HAS_BIAS: tl.constexpr,
    HAS_DROPOUT: tl.constexpr,
):
    """A tile of ROWS rows. LayerNorm: Ba et al. 2016; dropout: Srivastava et al. 2014 (inverted scaling)."""
    seed = tl.load(seed_ptr) if HAS_DROPOUT else 0
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * ROWS + tl.arange(0, ROWS).to(tl.int64)
    cols = tl.arange(0, BLOCK_H)
    hmask = cols < hidden
    mask = (rows < n_rows)[:, None] & hmask[None, :]
    h = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        h += tl.load(bias_ptr + cols, mask=hmask, other=0.0).to(tl.float32)[None, :]
    if HAS_DROPOUT:
        keep = _dropout_keep(rows[:, None], cols[None, :], hidden, dropout_p, seed, rng_offset)
        h = tl.where(keep, h * dropout_scale, 0.0)
    s = tl.load(residual_ptr + rows[:, None] * stride_r + cols[None, :], mask=mask, other=0.0).to(tl.float32) + h
    mean = tl.sum(s, axis=1) / hidden
    centred = tl.where(mask, s - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / hidden + eps)
    gain = tl.load(weight_ptr + cols, mask=hmask, other=0.0).to(tl.float32)
    shift = tl.load(ln_bias_ptr + cols, mask=hmask, other=0.0).to(tl.float32)
    y = centred * rstd[:, None] * gain[None, :] + shift[None, :]
    tl.store(y_ptr + rows[:, None] * stride_y + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(sum_ptr + rows[:, None] * hidden + cols[None, :], s.to(sum_ptr.dtype.element_ty), mask=mask)
    tl.store(mean_ptr + rows, mean, mask=rows < n_rows)
    tl.store(rstd_ptr + rows, rstd, mask=rows < n_rows)


@triton.jit
def _bdrln_bwd_kernel(
    grad_x_ptr,  # output, [N, H] contiguous, in x's dtype
    grad_residual_ptr,  # output, [N, H] contiguous, in the residual's dtype
    partial_ptr,  # output, [programs, 3, H] fp32 per-program sums (weight, ln_bias, bias)
    grad_y_ptr,  # [N, H] row stride stride_gy
    sum_ptr,  # [N, H] contiguous, from the forward
    mean_ptr,  # [N] fp32
    rstd_ptr,  # [N] fp32
    weight_ptr,  # [H]
    n_rows,  # N
    hidden,  # H
    stride_gy,
    tiles_per_program,  # row tiles each program walks
    dropout_p,
    dropout_scale,
    seed_ptr,  # [1] int64 dropout Philox key, read on the device (no host sync; fresh per CUDA-graph replay)
    rng_offset,
    ROWS: tl.constexpr,
    BLOCK_H: tl.constexpr,
    HAS_DROPOUT: tl.constexpr,
):
    """LayerNorm backward (ds = rstd * (g dy - mean(g dy) - x_hat mean(g dy x_hat))), then the dropout mask for
    x's gradient; parameter gradients summed per program (module docstring)."""
    seed = tl.load(seed_ptr) if HAS_DROPOUT else 0
    pid = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_H)
    hmask = cols < hidden
    gain = tl.load(weight_ptr + cols, mask=hmask, other=0.0).to(tl.float32)
    acc_weight = tl.zeros((BLOCK_H,), dtype=tl.float32)
    acc_ln_bias = tl.zeros((BLOCK_H,), dtype=tl.float32)
    acc_bias = tl.zeros((BLOCK_H,), dtype=tl.float32)
    first = pid * tiles_per_program
    last = tl.minimum(first + tiles_per_program, tl.cdiv(n_rows, ROWS))
    for tile in range(first, last):
        rows = tile * ROWS + tl.arange(0, ROWS).to(tl.int64)
        row_ok = rows < n_rows
        mask = row_ok[:, None] & hmask[None, :]
        dy = tl.load(grad_y_ptr + rows[:, None] * stride_gy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        s = tl.load(sum_ptr + rows[:, None] * hidden + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(mean_ptr + rows, mask=row_ok, other=0.0)
        rstd = tl.load(rstd_ptr + rows, mask=row_ok, other=0.0)
        x_hat = tl.where(mask, (s - mean[:, None]) * rstd[:, None], 0.0)
        acc_weight += tl.sum(dy * x_hat, axis=0)
        acc_ln_bias += tl.sum(dy, axis=0)
        g_dy = dy * gain[None, :]
        mean_g = tl.sum(g_dy, axis=1) / hidden
        mean_gx = tl.sum(g_dy * x_hat, axis=1) / hidden
        ds = tl.where(mask, rstd[:, None] * (g_dy - mean_g[:, None] - x_hat * mean_gx[:, None]), 0.0)
        offsets = rows[:, None] * hidden + cols[None, :]
        tl.store(grad_residual_ptr + offsets, ds.to(grad_residual_ptr.dtype.element_ty), mask=mask)
        dx = ds
        if HAS_DROPOUT:
            keep = _dropout_keep(rows[:, None], cols[None, :], hidden, dropout_p, seed, rng_offset)
            dx = tl.where(keep, ds * dropout_scale, 0.0)
        tl.store(grad_x_ptr + offsets, dx.to(grad_x_ptr.dtype.element_ty), mask=mask)
        acc_bias += tl.sum(dx, axis=0)
    partial = partial_ptr + pid * 3 * hidden
    tl.store(partial + PARTIAL_WEIGHT * hidden + cols, acc_weight, mask=hmask)
    tl.store(partial + PARTIAL_LN_BIAS * hidden + cols, acc_ln_bias, mask=hmask)
    tl.store(partial + PARTIAL_BIAS * hidden + cols, acc_bias, mask=hmask)


# ---------------------------------------------------------------------------------------------------------------------
# host launchers


def _rows_per_tile(block: int) -> int:
    """A tile of about 4096 elements (tile_rows), but never more rows than a wide row's registers allow."""
    return min(tile_rows(block), max(1, MAX_FUSED_HIDDEN // block))


def _dropout_args(dropout_p: float) -> dict:
    return dict(dropout_p=float(dropout_p), dropout_scale=1.0 / (1.0 - dropout_p) if dropout_p > 0 else 1.0)


def layer_norm_forward(
    x: torch.Tensor,
    bias: torch.Tensor | None,
    residual: torch.Tensor,
    weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    dropout_p: float,
    seed: torch.Tensor | int,  # [1] int64 on the device (or an int, copied there)
    offset: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # y, sum, mean, rstd
    n, hidden = x.shape
    device = x.device
    x, residual = (t if t.stride(-1) == 1 else t.contiguous() for t in (x, residual))
    y = torch.empty((n, hidden), dtype=x.dtype, device=device)
    s = torch.empty((n, hidden), dtype=x.dtype, device=device)
    mean = torch.empty(n, dtype=torch.float32, device=device)
    rstd = torch.empty(n, dtype=torch.float32, device=device)
    if n == 0:
        return y, s, mean, rstd
    block = row_block(hidden)
    rows = _rows_per_tile(block)
    _bdrln_fwd_kernel[(triton.cdiv(n, rows),)](
        y, s, mean, rstd, x, bias if bias is not None else weight, residual, weight.contiguous(),
        ln_bias.contiguous(), n, hidden, x.stride(0), residual.stride(0), y.stride(0), eps, **_dropout_args(dropout_p),
        seed_ptr=seed_pointer(seed, device),
        rng_offset=offset, ROWS=rows, BLOCK_H=block, HAS_BIAS=bias is not None,
        HAS_DROPOUT=dropout_p > 0, num_warps=row_warps(rows * block),
    )  # fmt: skip
    return y, s, mean, rstd


def layer_norm_backward(
    grad_y: torch.Tensor,
    s: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    weight: torch.Tensor,
    residual_dtype: torch.dtype,
    dropout_p: float,
    seed: torch.Tensor | int,  # [1] int64 on the device (or an int, copied there)
    offset: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of (x, residual, weight, ln_bias, bias); the parameter ones in fp32 (the caller casts)."""
    n, hidden = s.shape
    device = s.device
    grad_x = torch.empty((n, hidden), dtype=s.dtype, device=device)
    grad_residual = torch.empty((n, hidden), dtype=residual_dtype, device=device)
    block = row_block(hidden)
    rows = _rows_per_tile(block)
    tiles = triton.cdiv(n, rows)
    per_sm = PERSISTENT_CTAS_PER_SM["layer_norm_backward"]
    programs = persistent_programs(tiles, device, per_sm)
    partial = torch.zeros((max(programs, 1), 3, hidden), dtype=torch.float32, device=device)
    if n:
        grad_y = grad_y if grad_y.stride(-1) == 1 else grad_y.contiguous()
        warps = row_warps(rows * block)
        _bdrln_bwd_kernel[(programs,)](
            grad_x, grad_residual, partial, grad_y, s, mean, rstd, weight.contiguous(), n, hidden, grad_y.stride(0),
            triton.cdiv(tiles, programs), **_dropout_args(dropout_p), seed_ptr=seed_pointer(seed, device),
            rng_offset=offset, ROWS=rows,
            BLOCK_H=block, HAS_DROPOUT=dropout_p > 0, num_warps=warps, maxnreg=persistent_max_registers(warps, per_sm),
        )  # fmt: skip
    sums = partial.sum(0)
    return grad_x, grad_residual, sums[PARTIAL_WEIGHT.value], sums[PARTIAL_LN_BIAS.value], sums[PARTIAL_BIAS.value]
