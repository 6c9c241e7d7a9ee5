"""Sinusoidal box-geometry encoding in Triton (the formula: vlbert_fast/ops/geometry.py).

The op computes the four scaled box values (centre x, centre y, width, height; [M, 4], a few bytes per box) in
PyTorch, where autograd carries them back to the boxes and image sizes; the kernels do the wide part: for each value
p and frequency k, sin(p / wave_length**(k/F)) and cos(...) into 8F columns, coordinate-major. The forward writes
through a row stride, so it can fill the geometry half of the visual projection's input [K, Dv + Dg] in place, next
to the appearance features, and no concatenation pass is needed.

Layers (STYLE.md): `_box_geometry_fwd_kernel` / `_box_geometry_bwd_kernel`, host launchers `box_geometry_forward` /
`box_geometry_backward`; the autograd layer is the custom op in ops/geometry.py (ops/library.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .utils import tile_rows

MAX_FREQUENCIES = 4096
"""F = dim / 8 frequencies per value are held in one tile row (a power of two for tl.arange); the geometry width is
2048 (F = 256) in every VL-BERT config, so 4096 (dim 32768) is far beyond any use and keeps a tile in registers."""


@triton.jit
def _box_geometry_fwd_kernel(
    out_ptr,  # output, [M, 8F] row stride stride_out, columns contiguous
    values_ptr,  # input, [M, 4] fp32 contiguous: scaled centre x, centre y, width, height
    dim_mat_ptr,  # input, [F] fp32 wave_length ** (k / F), computed on the host exactly as the reference does
    n_boxes,  # M
    freqs,  # F
    stride_out,
    BLOCK_M: tl.constexpr,  # boxes per program
    BLOCK_F: tl.constexpr,  # next power of two >= F
):
    """BLOCK_M boxes per program; for each of the 4 values a [BLOCK_M, F] tile of sines, then one of cosines."""
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    ks = tl.arange(0, BLOCK_F)
    row_mask = rows < n_boxes
    mask = row_mask[:, None] & (ks < freqs)[None, :]
    dim_mat = tl.load(dim_mat_ptr + ks, mask=ks < freqs, other=1.0)
    for c in tl.static_range(4):
        value = tl.load(values_ptr + rows * 4 + c, mask=row_mask, other=0.0)
        angle = value[:, None] / dim_mat[None, :]
        dst = out_ptr + rows[:, None] * stride_out + c * 2 * freqs + ks[None, :]
        tl.store(dst, tl.sin(angle).to(out_ptr.dtype.element_ty), mask=mask)
        tl.store(dst + freqs, tl.cos(angle).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _box_geometry_bwd_kernel(
    grad_values_ptr,  # output, [M, 4] fp32 contiguous
    grad_out_ptr,  # input, [M, 8F] row stride stride_grad_out, columns contiguous
    values_ptr,  # input, [M, 4] fp32 contiguous
    dim_mat_ptr,  # input, [F] fp32
    n_boxes,  # M
    freqs,  # F
    stride_grad_out,
    BLOCK_M: tl.constexpr,
    BLOCK_F: tl.constexpr,
):
    """d/dp of sin(p/d_k) is cos(p/d_k)/d_k and of cos(p/d_k) is -sin(p/d_k)/d_k; summed over k per value."""
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    ks = tl.arange(0, BLOCK_F)
    row_mask = rows < n_boxes
    mask = row_mask[:, None] & (ks < freqs)[None, :]
    dim_mat = tl.load(dim_mat_ptr + ks, mask=ks < freqs, other=1.0)
    for c in tl.static_range(4):
        value = tl.load(values_ptr + rows * 4 + c, mask=row_mask, other=0.0)
        angle = value[:, None] / dim_mat[None, :]
        src = grad_out_ptr + rows[:, None] * stride_grad_out + c * 2 * freqs + ks[None, :]
        g_sin = tl.load(src, mask=mask, other=0.0).to(tl.float32)
        g_cos = tl.load(src + freqs, mask=mask, other=0.0).to(tl.float32)
        grad = tl.sum((g_sin * tl.cos(angle) - g_cos * tl.sin(angle)) / dim_mat[None, :], axis=1)
        tl.store(grad_values_ptr + rows * 4 + c, grad, mask=row_mask)


def _launch_shape(n_boxes: int, freqs: int) -> tuple[int, int, tuple[int]]:
    if freqs > MAX_FREQUENCIES:
        raise ValueError(f"dim {8 * freqs} is above the Triton kernel's maximum {8 * MAX_FREQUENCIES}")
    block_f = triton.next_power_of_2(freqs)
    block_m = tile_rows(block_f)
    return block_m, block_f, (triton.cdiv(n_boxes, block_m),)


def box_geometry_forward(
    values: torch.Tensor,  # [M, 4] fp32: scaled centre x, centre y, width, height
    dim_mat: torch.Tensor,  # [F] fp32
    out: torch.Tensor,  # [M, 8F], columns contiguous (may be a column slice of a wider buffer)
) -> torch.Tensor:
    n_boxes, freqs = values.shape[0], dim_mat.shape[0]
    if out.shape != (n_boxes, 8 * freqs) or out.stride(-1) != 1:
        raise ValueError(
            f"out: expected shape ({n_boxes}, {8 * freqs}) with contiguous columns, "
            f"found {tuple(out.shape)} with strides {out.stride()}"
        )
    if n_boxes == 0:
        return out
    block_m, block_f, grid = _launch_shape(n_boxes, freqs)
    _box_geometry_fwd_kernel[grid](
        out, values.contiguous(), dim_mat.contiguous(), n_boxes, freqs, out.stride(0), BLOCK_M=block_m, BLOCK_F=block_f
    )
    return out


def box_geometry_backward(
    grad_out: torch.Tensor,  # [M, 8F]
    values: torch.Tensor,  # [M, 4] fp32
    dim_mat: torch.Tensor,  # [F] fp32
) -> torch.Tensor:  # [M, 4] fp32
    n_boxes, freqs = values.shape[0], dim_mat.shape[0]
    grad_values = torch.empty(n_boxes, 4, dtype=torch.float32, device=values.device)
    if n_boxes == 0:
        return grad_values
    if grad_out.stride(-1) != 1:
        grad_out = grad_out.contiguous()
    block_m, block_f, grid = _launch_shape(n_boxes, freqs)
    _box_geometry_bwd_kernel[grid](
        grad_values, grad_out, values.contiguous(), dim_mat.contiguous(), n_boxes, freqs, grad_out.stride(0),
        BLOCK_M=block_m, BLOCK_F=block_f,
    )  # fmt: skip
    return grad_values
