"""Bias + GELU (erf form) in Triton, forward and backward.

The op, its arguments and its reference are specified in `vlbert_fast/ops/gelu.py`; this module holds the kernels
and their host launchers; the autograd layer is the op's custom op (ops/library.py).

Forward: one tile of ROWS x BLOCK_C per program, y = GELU(x + b) in fp32, stored once. The backward needs only x
(the projection's output, which the unfused graph keeps too) and the bias: with z = x + b,
GELU'(z) = Phi(z) + z phi(z), Phi(z) = (1 + erf(z / sqrt 2)) / 2, phi(z) = exp(-z^2 / 2) / sqrt(2 pi).
Backward programs are persistent over rows: each walks a contiguous range of row tiles of one column block and keeps
the bias gradient's column sums in registers, written as partial sums [programs, I] and added up on the host.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .utils import PERSISTENT_CTAS_PER_SM, persistent_programs, row_warps, tile_rows

INV_SQRT2: tl.constexpr = tl.constexpr(0.7071067811865476)  # 1 / sqrt(2)
INV_SQRT_2PI: tl.constexpr = tl.constexpr(0.3989422804014327)  # 1 / sqrt(2 pi)
MAX_BLOCK_C = 1024  # columns per tile: wide enough for 16-byte loads per thread, narrow enough to keep 4+ rows


@triton.jit
def _bias_gelu_fwd_kernel(
    y_ptr,  # output, [N, I] contiguous
    x_ptr,  # [N, I] row stride stride_x
    bias_ptr,  # [I]
    n_rows,  # N
    n_cols,  # I
    stride_x,
    ROWS: tl.constexpr,  # rows per tile
    BLOCK_C: tl.constexpr,  # columns per tile
):
    """GELU(x + b), Hendrycks & Gimpel 2016, exact (erf) form as BERT uses it."""
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS).to(tl.int64)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < n_cols
    mask = (rows < n_rows)[:, None] & cmask[None, :]
    z = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    z += tl.load(bias_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    y = 0.5 * z * (1.0 + tl.math.erf(z * INV_SQRT2))
    tl.store(y_ptr + rows[:, None] * n_cols + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bias_gelu_bwd_kernel(
    grad_x_ptr,  # output, [N, I] contiguous, in x's dtype
    partial_ptr,  # output, [programs, I] fp32 per-program column sums of grad_x (the bias gradient)
    grad_y_ptr,  # [N, I] row stride stride_gy
    x_ptr,  # [N, I] row stride stride_x
    bias_ptr,  # [I]
    n_rows,  # N
    n_cols,  # I
    stride_gy,
    stride_x,
    tiles_per_program,  # row tiles each program walks
    ROWS: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """dx = dy * GELU'(x + b); the bias gradient is the column sum of dx (module docstring)."""
    pid = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < n_cols
    bias = tl.load(bias_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    acc = tl.zeros((BLOCK_C,), dtype=tl.float32)
    first = pid * tiles_per_program
    last = tl.minimum(first + tiles_per_program, tl.cdiv(n_rows, ROWS))
    for tile in range(first, last):
        rows = tile * ROWS + tl.arange(0, ROWS).to(tl.int64)
        mask = (rows < n_rows)[:, None] & cmask[None, :]
        z = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        z += bias[None, :]
        dy = tl.load(grad_y_ptr + rows[:, None] * stride_gy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        slope = 0.5 * (1.0 + tl.math.erf(z * INV_SQRT2)) + z * INV_SQRT_2PI * tl.exp(-0.5 * z * z)
        dx = tl.where(mask, dy * slope, 0.0)
        tl.store(grad_x_ptr + rows[:, None] * n_cols + cols[None, :], dx.to(grad_x_ptr.dtype.element_ty), mask=mask)
        acc += tl.sum(dx, axis=0)
    tl.store(partial_ptr + pid * n_cols + cols, acc, mask=cmask)


# ---------------------------------------------------------------------------------------------------------------------
# host launchers


def _tile(n_cols: int) -> tuple[int, int]:
    """(rows, columns) of a tile: about 2048 elements, 8 per thread at 8 warps. ptxas for sm_90: the backward
    (x, dy, the slope and the column sums live at once) spills at 4096 elements and fits at 2048."""
    block = min(MAX_BLOCK_C, triton.next_power_of_2(max(n_cols, 16)))
    return tile_rows(block, elements=2048), block


def bias_gelu_forward(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:  # [N, I] in x's dtype
    n, cols = x.shape
    x = x if x.stride(-1) == 1 else x.contiguous()
    y = torch.empty((n, cols), dtype=x.dtype, device=x.device)
    if n == 0:
        return y
    rows, block = _tile(cols)
    _bias_gelu_fwd_kernel[(triton.cdiv(n, rows), triton.cdiv(cols, block))](
        y, x, bias.contiguous(), n, cols, x.stride(0), ROWS=rows, BLOCK_C=block, num_warps=row_warps(rows * block)
    )
    return y


def bias_gelu_backward(
    grad_y: torch.Tensor, x: torch.Tensor, bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:  # grad_x in x's dtype, grad_bias fp32
    n, cols = x.shape
    x = x if x.stride(-1) == 1 else x.contiguous()
    grad_y = grad_y if grad_y.stride(-1) == 1 else grad_y.contiguous()
    grad_x = torch.empty((n, cols), dtype=x.dtype, device=x.device)
    rows, block = _tile(cols)
    tiles = triton.cdiv(n, rows)
    # each program is cdiv(cols, block) CTAs: the grid as a whole fills the persistent slots once (one wave)
    programs = persistent_programs(
        tiles, x.device, PERSISTENT_CTAS_PER_SM["bias_gelu_backward"], columns=triton.cdiv(cols, block)
    )
    partial = torch.zeros((max(programs, 1), cols), dtype=torch.float32, device=x.device)
    if n:
        _bias_gelu_bwd_kernel[(programs, triton.cdiv(cols, block))](
            grad_x, partial, grad_y, x, bias.contiguous(), n, cols, grad_y.stride(0), x.stride(0),
            triton.cdiv(tiles, programs), ROWS=rows, BLOCK_C=block, num_warps=row_warps(rows * block),
        )  # fmt: skip
    return grad_x, partial.sum(0)
