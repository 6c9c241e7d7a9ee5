"""RoIAlign in Triton: forward, scatter backward (atomics) and a deterministic gather backward.

Semantics of torchvision.ops.roi_align / Detectron's RoIAlign (He et al., "Mask R-CNN", 2017); the specification is
`vlbert_fast.ops.roi_align.roi_align_reference`, and csrc/roi_align_common.h is the same geometry in C++.

Layout: features are read as NHWC (channels-last) through explicit strides. The forward and the scatter backward
run one program per (box, bin row) and block of up to 1024 channels, 16 bytes of neighbouring channels per thread
(one 128-bit load per tap); the box geometry is computed once per program and the hot loop (one sample) holds no
division. fp16/bf16/fp32 in and out; the sums are fp32 and the result is cast once at the store. The scatter
backward adds into an fp32 buffer with relaxed atomics (fast; the order of additions varies between runs on a
GPU). The deterministic backward gathers instead: one program per feature cell visits the boxes of its image in
index order and sums the samples that touch the cell, so every cell gets its additions in a fixed order and the
gradient is bitwise reproducible.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Launch heuristics for RoIAlign (they move to kernels/utils.py at merge, with the other ops' heuristics).
# Forward and scatter backward: one program per (box, bin row) and block of channels; each thread holds 16 bytes of
# neighbouring channels, so every tap of a channels-last map is one 128-bit load per thread, and a ResNet C4 map
# (1024 channels) is one program per bin row (bf16: 4 warps, fp32: 8 warps).
MAX_BLOCK_C = 1024
MAX_WARPS = 8
VECTOR_BYTES = 16
# Samples x channels per step of the deterministic gather: at 4 warps that is 8 fp32 accumulators per thread.
MAX_TILE = 1024
# (y-sample, x-sample) pairs per step of the deterministic gather: a cell's neighbourhood at about one sample per
# cell is 3 x 3 to 4 x 4 pairs, one step per box.
GATHER_BLOCK_S = 16


def _row_launch_config(channels: int, element_size: int) -> tuple[int, int]:
    """(BLOCK_C, num_warps) of the forward and scatter kernels: 16 bytes of channels per thread."""
    block_c = min(triton.next_power_of_2(max(channels, 1)), MAX_BLOCK_C)
    per_thread = max(1, VECTOR_BYTES // element_size)
    return block_c, max(1, min(MAX_WARPS, block_c // (32 * per_thread)))


def _gather_launch_config(channels: int) -> tuple[int, int]:
    """(BLOCK_C, num_warps) of the deterministic gather: a tile of GATHER_BLOCK_S pairs x BLOCK_C channels."""
    block_c = min(triton.next_power_of_2(max(channels, 1)), MAX_BLOCK_C, max(16, MAX_TILE // GATHER_BLOCK_S))
    return block_c, max(1, min(4, GATHER_BLOCK_S * block_c // 64))


@triton.jit
def _roi_geometry(
    rois_ptr,  # in, [K, 5] fp32 (batch index, x1, y1, x2, y2)
    k,  # box index
    N,  # batch size
    PH,
    PW,
    spatial_scale,
    sampling_ratio,
    ALIGNED: tl.constexpr,
):
    """Box k in feature cells: (batch or -1, start_y, start_x, bin_h, bin_w, grid_h, grid_w, 1/count)."""
    roi = rois_ptr + k * 5
    b = tl.load(roi).to(tl.float32)
    # truncation toward zero maps (-1, N) onto 0..N-1, as torchvision's C cast does
    batch = tl.where((b > -1.0) & (b < N), b, -1.0).to(tl.int64)
    offset = 0.5 if ALIGNED else 0.0
    start_x = tl.load(roi + 1).to(tl.float32) * spatial_scale - offset
    start_y = tl.load(roi + 2).to(tl.float32) * spatial_scale - offset
    roi_w = tl.load(roi + 3).to(tl.float32) * spatial_scale - offset - start_x
    roi_h = tl.load(roi + 4).to(tl.float32) * spatial_scale - offset - start_y
    if not ALIGNED:  # legacy: a box is at least one cell wide and high
        roi_w = tl.maximum(roi_w, 1.0)
        roi_h = tl.maximum(roi_h, 1.0)
    bin_w = roi_w / PW
    bin_h = roi_h / PH
    # adaptive: ceil(bin) samples; a negative bin (aligned, x2 < x1) gives none; capped like the C++ code
    grid_h = tl.where(sampling_ratio > 0, sampling_ratio, tl.minimum(tl.maximum(tl.ceil(bin_h), 0.0), 1048576.0))
    grid_w = tl.where(sampling_ratio > 0, sampling_ratio, tl.minimum(tl.maximum(tl.ceil(bin_w), 0.0), 1048576.0))
    grid_h = grid_h.to(tl.int32)
    grid_w = grid_w.to(tl.int32)
    inv_count = 1.0 / tl.maximum(grid_h * grid_w, 1).to(tl.float32)
    return batch, start_y, start_x, bin_h, bin_w, grid_h, grid_w, inv_count


@triton.jit
def _axis_weights(v, size):
    """Bilinear taps of coordinate v on an axis of `size` cells: (low, high, w_low, w_high, inside)."""
    inside = (v >= -1.0) & (v <= size)  # False for NaN too
    v = tl.minimum(tl.maximum(v, 0.0), size * 1.0)  # clamped before the cast, so the int is in range
    low = v.to(tl.int32)
    at_end = low >= size - 1  # at or beyond the last cell centre: all weight on the last cell
    low = tl.where(at_end, size - 1, low)
    high = tl.where(at_end, size - 1, low + 1)
    frac = tl.where(at_end, 0.0, v - low.to(tl.float32))
    w_low = tl.where(inside, 1.0 - frac, 0.0)
    w_high = tl.where(inside, frac, 0.0)
    return low, high, w_low, w_high, inside


@triton.jit
def _sample_coord(start, bin, step, p, i):
    """Coordinate of sample i of bin p along one axis, as the reference computes it (step = bin / max(grid, 1),
    divided once per box); the deterministic gather recomputes it the same way."""
    return start + p * bin + (i + 0.5) * step


@triton.jit
def _roi_align_fwd_kernel(
    feat_ptr,  # in, [N, C, H, W] through strides (channels-last: stride_fc == 1); one plane < 2**31 elements
    rois_ptr,  # in, [K, 5] fp32, contiguous
    out_ptr,  # out, [K, C, PH, PW] through strides
    N,
    C,
    H,
    W,
    PH,
    PW,
    stride_fn,
    stride_fc,
    stride_fh,
    stride_fw,
    stride_ok,
    stride_oc,
    stride_oh,
    stride_ow,
    spatial_scale,  # input pixels -> feature cells
    sampling_ratio,  # samples per bin axis; 0 = adaptive
    ALIGNED: tl.constexpr,
    BLOCK_C: tl.constexpr,  # channels per program
):
    """out[k, c, ph, pw] = mean over the bin's samples of the bilinear value of features[batch(k), c].

    One program per (box, bin row) and block of channels: the box geometry is read once, the row's y taps once per
    sample row, and the hot loop (one x sample) is four vector loads of BLOCK_C channels and their weighted sum.
    Tap offsets inside a plane are int32; the only int64 is the plane's base."""
    row = tl.program_id(0)  # k * PH + ph
    k = row // PH
    ph = row - k * PH
    batch, start_y, start_x, bin_h, bin_w, grid_h, grid_w, inv_count = _roi_geometry(
        rois_ptr, k, N, PH, PW, spatial_scale, sampling_ratio, ALIGNED
    )
    step_h = bin_h / tl.maximum(grid_h, 1).to(tl.float32)
    step_w = bin_w / tl.maximum(grid_w, 1).to(tl.float32)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    # `c < limit` with a scalar limit rather than `vector & scalar_bool`, which the Triton interpreter broadcasts
    # wrongly; a box with an out-of-range image reads nothing and pools to 0
    limit = tl.where(batch >= 0, C, 0)
    plane = feat_ptr + tl.maximum(batch, 0) * stride_fn + c * stride_fc  # [BLOCK_C]
    out_row = out_ptr + k.to(tl.int64) * stride_ok + c * stride_oc + ph * stride_oh
    for pw in range(0, PW):
        acc = tl.zeros([BLOCK_C], dtype=tl.float32)
        for iy in range(0, grid_h):
            y0, y1, wy0, wy1, y_in = _axis_weights(_sample_coord(start_y, bin_h, step_h, ph, iy), H)
            r0 = plane + y0 * stride_fh
            r1 = plane + y1 * stride_fh
            y_limit = tl.where(y_in, limit, 0)
            for ix in range(0, grid_w):
                x0, x1, wx0, wx1, x_in = _axis_weights(_sample_coord(start_x, bin_w, step_w, pw, ix), W)
                m = c < tl.where(x_in, y_limit, 0)  # outside samples load nothing (0 even over inf/NaN)
                o0 = x0 * stride_fw
                o1 = x1 * stride_fw
                v00 = tl.load(r0 + o0, mask=m, other=0.0).to(tl.float32)
                v01 = tl.load(r0 + o1, mask=m, other=0.0).to(tl.float32)
                v10 = tl.load(r1 + o0, mask=m, other=0.0).to(tl.float32)
                v11 = tl.load(r1 + o1, mask=m, other=0.0).to(tl.float32)
                acc += wy0 * (wx0 * v00 + wx1 * v01) + wy1 * (wx0 * v10 + wx1 * v11)
        tl.store(out_row + pw * stride_ow, (acc * inv_count).to(out_ptr.dtype.element_ty), mask=c < C)


@triton.jit
def _roi_align_bwd_kernel(
    grad_out_ptr,  # in, [K, C, PH, PW] through strides
    rois_ptr,  # in, [K, 5] fp32, contiguous
    grad_acc_ptr,  # in/out, [N, C, H, W] fp32 through strides, zero-filled; atomically accumulated
    N,
    C,
    H,
    W,
    PH,
    PW,
    stride_gk,
    stride_gc,
    stride_gh,
    stride_gw,
    stride_an,
    stride_ac,
    stride_ah,
    stride_aw,
    spatial_scale,
    sampling_ratio,
    ALIGNED: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Scatter: each (box, bin) adds grad_out * weight / count to the 4 cells of each of its samples; one program
    per (box, bin row) and block of channels, as the forward."""
    row = tl.program_id(0)
    k = row // PH
    ph = row - k * PH
    batch, start_y, start_x, bin_h, bin_w, grid_h, grid_w, inv_count = _roi_geometry(
        rois_ptr, k, N, PH, PW, spatial_scale, sampling_ratio, ALIGNED
    )
    step_h = bin_h / tl.maximum(grid_h, 1).to(tl.float32)
    step_w = bin_w / tl.maximum(grid_w, 1).to(tl.float32)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    limit = tl.where(batch >= 0, C, 0)
    g_row = grad_out_ptr + k.to(tl.int64) * stride_gk + c * stride_gc + ph * stride_gh
    plane = grad_acc_ptr + tl.maximum(batch, 0) * stride_an + c * stride_ac
    for pw in range(0, PW):
        g = tl.load(g_row + pw * stride_gw, mask=c < limit, other=0.0).to(tl.float32) * inv_count
        for iy in range(0, grid_h):
            y0, y1, wy0, wy1, y_in = _axis_weights(_sample_coord(start_y, bin_h, step_h, ph, iy), H)
            r0 = plane + y0 * stride_ah
            r1 = plane + y1 * stride_ah
            g0 = g * wy0
            g1 = g * wy1
            y_limit = tl.where(y_in, limit, 0)
            for ix in range(0, grid_w):
                x0, x1, wx0, wx1, x_in = _axis_weights(_sample_coord(start_x, bin_w, step_w, pw, ix), W)
                m = c < tl.where(x_in, y_limit, 0)
                o0 = x0 * stride_aw
                o1 = x1 * stride_aw
                # Relaxed: pure accumulation into a buffer that nothing reads until the kernel has ended (the
                # launch boundary orders it); acq_rel, the default, fences every add (MEMBAR.ALL.GPU + CCTL.IVALL).
                tl.atomic_add(r0 + o0, g0 * wx0, mask=m, sem="relaxed")
                tl.atomic_add(r0 + o1, g0 * wx1, mask=m, sem="relaxed")
                tl.atomic_add(r1 + o0, g1 * wx0, mask=m, sem="relaxed")
                tl.atomic_add(r1 + o1, g1 * wx1, mask=m, sem="relaxed")


@triton.jit
def _sample_range(start, bin, grid, n_bins, cell, size):
    """Sample indices [j0, j1) along one axis (sample j = bin * grid + i sits near start + (j + 0.5) * step) that
    can touch `cell`: those within [cell - 1, cell + 1], widened to [-1, ...] / [..., size] at the borders where
    samples are clamped onto the edge cell, plus one index of slack each side for rounding. The caller recomputes
    each sample exactly as the forward does, so the range only needs to be a superset."""
    n = n_bins * grid
    step = bin / tl.maximum(grid, 1).to(tl.float32)
    lo = tl.where(cell == 0, -1.0, cell - 1.0)
    hi = tl.where(cell == size - 1, size * 1.0, cell + 1.0)
    safe = tl.where(step != 0.0, step, 1.0)
    ja = (lo - start) / safe - 0.5
    jb = (hi - start) / safe - 0.5
    nf = n.to(tl.float32)
    f0 = tl.minimum(tl.maximum(tl.floor(tl.minimum(ja, jb)) - 1.0, 0.0), nf)
    f1 = tl.minimum(tl.maximum(tl.floor(tl.maximum(ja, jb)) + 2.0, 0.0), nf)
    # a zero-size box has every sample at `start`: visit them all (the exact test sorts them out)
    j0 = tl.where(step != 0.0, f0, 0.0).to(tl.int32)
    j1 = tl.where(step != 0.0, f1, nf).to(tl.int32)
    return j0, j1


@triton.jit
def _cell_weight(start, bin, grid, j, cell, size):
    """(bin, weight on `cell`) of samples j (bin j // grid, sub-sample j % grid), computed as the forward does."""
    p = j // grid
    i = j % grid
    v = _sample_coord(start, bin, bin / tl.maximum(grid, 1).to(tl.float32), p, i)
    low, high, w_low, w_high, inside = _axis_weights(v, size)
    return p, tl.where(low == cell, w_low, 0.0) + tl.where(high == cell, w_high, 0.0)


@triton.jit
def _roi_align_bwd_deterministic_kernel(
    grad_out_ptr,  # in, [K, C, PH, PW] through strides
    rois_ptr,  # in, [K, 5] fp32, contiguous
    order_ptr,  # in, [K] int32: box indices sorted by image (stable, so index order within an image)
    seg_ptr,  # in, [N + 1] int32: boxes of image n are order[seg[n]:seg[n + 1]]
    grad_ptr,  # out, [N, C, H, W] through strides, features' dtype; every cell written once
    N,
    C,
    H,
    W,
    PH,
    PW,
    stride_gk,
    stride_gc,
    stride_gh,
    stride_gw,
    stride_dn,
    stride_dc,
    stride_dh,
    stride_dw,
    spatial_scale,
    sampling_ratio,
    ALIGNED: tl.constexpr,
    BLOCK_S: tl.constexpr,  # (y-sample, x-sample) pairs per step
    BLOCK_C: tl.constexpr,
):
    """Gather: grad[n, c, h, w] = sum over the boxes of image n, in order, of the samples that touch (h, w)."""
    pid_cell = tl.program_id(0).to(tl.int64)  # n * H * W + h * W + w
    pid_c = tl.program_id(1).to(tl.int64)
    n = pid_cell // (H * W)
    h = ((pid_cell // W) % H).to(tl.int32)
    w = (pid_cell % W).to(tl.int32)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    acc = tl.zeros([BLOCK_S, BLOCK_C], dtype=tl.float32)
    for t in range(tl.load(seg_ptr + n), tl.load(seg_ptr + n + 1)):
        k = tl.load(order_ptr + t).to(tl.int64)
        # Cheap rejection of boxes far from this cell, from the raw corners: samples lie within
        # [min * scale - 0.5, max * scale + 1] (aligned shift, legacy one-cell minimum) and touch the cells at most
        # one below and one above; a margin of one more cell absorbs rounding.
        bx1 = tl.load(rois_ptr + k * 5 + 1).to(tl.float32) * spatial_scale
        by1 = tl.load(rois_ptr + k * 5 + 2).to(tl.float32) * spatial_scale
        bx2 = tl.load(rois_ptr + k * 5 + 3).to(tl.float32) * spatial_scale
        by2 = tl.load(rois_ptr + k * 5 + 4).to(tl.float32) * spatial_scale
        near_y = (h >= tl.minimum(by1, by2) - 2.5) & (h <= tl.maximum(by1, by2) + 3.0)
        near_x = (w >= tl.minimum(bx1, bx2) - 2.5) & (w <= tl.maximum(bx1, bx2) + 3.0)
        if near_y & near_x:
            batch, start_y, start_x, bin_h, bin_w, grid_h, grid_w, inv_count = _roi_geometry(
                rois_ptr, k, N, PH, PW, spatial_scale, sampling_ratio, ALIGNED
            )
            jy0, jy1 = _sample_range(start_y, bin_h, grid_h, PH, h, H)
            jx0, jx1 = _sample_range(start_x, bin_w, grid_w, PW, w, W)
            nx = tl.maximum(jx1 - jx0, 1)
            n_pairs = (jy1 - jy0) * (jx1 - jx0)
            g_box = grad_out_ptr + k * stride_gk + c[None, :] * stride_gc
            for p0 in range(0, n_pairs, BLOCK_S):
                pair = p0 + tl.arange(0, BLOCK_S)
                ph, wy = _cell_weight(start_y, bin_h, grid_h, jy0 + pair // nx, h, H)
                pw, wx = _cell_weight(start_x, bin_w, grid_w, jx0 + pair % nx, w, W)
                wgt = tl.where(pair < n_pairs, wy * wx, 0.0) * inv_count
                m = (wgt != 0.0)[:, None] & c_ok[None, :]  # samples that do not touch this cell load nothing
                g = tl.load(g_box + (ph * stride_gh + pw * stride_gw)[:, None], mask=m, other=0.0).to(tl.float32)
                acc += g * wgt[:, None]
    dst = grad_ptr + n * stride_dn + c * stride_dc + h * stride_dh + w * stride_dw
    tl.store(dst, tl.sum(acc, axis=0).to(grad_ptr.dtype.element_ty), mask=c_ok)


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    """channels_last when t is stored NHWC (and not also plain-contiguous), else contiguous_format."""
    if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _check_plane(C: int, H: int, W: int) -> None:
    """The forward and scatter kernels index inside one feature map in int32."""
    if C * H * W >= 2**31:
        raise ValueError(f"features: one feature map of C*H*W = {C}*{H}*{W} elements is 2**31 or more; the RoIAlign "
                         "kernels index a map in int32")  # fmt: skip


def roi_align_forward(
    features: torch.Tensor,  # [N, C, H, W], fp16/bf16/fp32, any memory format
    rois: torch.Tensor,  # [K, 5] (batch index, x1, y1, x2, y2), floating
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:  # [K, C, PH, PW] in features' dtype and memory format
    """Launch the forward kernel. Features are made channels-last first (a no-op when they already are): the
    kernel's loads are then contiguous over channels, which repays the copy many times over for 14x14 bins."""
    N, C, H, W = features.shape
    PH, PW = output_size
    K = rois.shape[0]
    out = torch.empty((K, C, PH, PW), dtype=features.dtype, device=features.device)
    out = out.contiguous(memory_format=_memory_format(features))
    if out.numel() == 0:
        return out
    feat = features.contiguous(memory_format=torch.channels_last)
    rois32 = rois.to(torch.float32).contiguous()
    _check_plane(C, H, W)
    block_c, num_warps = _row_launch_config(C, feat.element_size())
    _roi_align_fwd_kernel[(K * PH, triton.cdiv(C, block_c))](
        feat, rois32, out, N, C, H, W, PH, PW, *feat.stride(), *out.stride(), float(spatial_scale), int(sampling_ratio),
        ALIGNED=bool(aligned), BLOCK_C=block_c, num_warps=num_warps,
    )  # fmt: skip
    return out


def roi_align_backward(
    grad_out: torch.Tensor,  # [K, C, PH, PW], any strides
    rois: torch.Tensor,  # [K, 5]
    feature_shape: tuple[int, int, int, int],  # (N, C, H, W)
    memory_format: torch.memory_format,  # of the features; the gradient gets the same
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
    deterministic: bool = False,
) -> torch.Tensor:  # [N, C, H, W] in grad_out's dtype
    """Gradient w.r.t. the features. Scatter with fp32 atomics, or (deterministic) gather per feature cell."""
    N, C, H, W = feature_shape
    K, _, PH, PW = grad_out.shape
    device = grad_out.device
    if K == 0 or grad_out.numel() == 0 or N * C * H * W == 0:
        return torch.zeros(feature_shape, dtype=grad_out.dtype, device=device).contiguous(memory_format=memory_format)
    rois32 = rois.to(torch.float32).contiguous()
    sizes = (N, C, H, W, PH, PW)
    params = (float(spatial_scale), int(sampling_ratio))
    if deterministic:
        # Boxes grouped by image, index order kept within an image (stable sort); boxes whose batch index is out
        # of range (only reachable when the public checks were skipped under torch.compile) belong to no image.
        batch = rois32[:, 0]
        image = torch.where((batch > -1) & (batch < N), batch.to(torch.int64), N)
        order = torch.argsort(image, stable=True).to(torch.int32)
        seg = torch.zeros(N + 2, dtype=torch.int64, device=device)
        seg[1:] = torch.cumsum(torch.bincount(image, minlength=N + 1), 0)
        seg = seg[: N + 1].to(torch.int32)
        grad = torch.empty((N, H, W, C), dtype=grad_out.dtype, device=device).permute(0, 3, 1, 2)  # channels-last
        block_c, num_warps = _gather_launch_config(C)
        _roi_align_bwd_deterministic_kernel[(N * H * W, triton.cdiv(C, block_c))](
            grad_out, rois32, order, seg, grad, *sizes, *grad_out.stride(), *grad.stride(), *params,
            ALIGNED=bool(aligned), BLOCK_S=GATHER_BLOCK_S, BLOCK_C=block_c, num_warps=num_warps,
        )  # fmt: skip
        return grad.contiguous(memory_format=memory_format)
    grad_acc = torch.zeros((N, H, W, C), dtype=torch.float32, device=device).permute(0, 3, 1, 2)  # channels-last
    _check_plane(C, H, W)
    # 16 bytes of the fp32 accumulator per thread: the vector atomics (RED.ADD.F32x4) then take the loaded
    # gradient's layout as it is, with no exchange through shared memory
    block_c, num_warps = _row_launch_config(C, grad_acc.element_size())
    _roi_align_bwd_kernel[(K * PH, triton.cdiv(C, block_c))](
        grad_out, rois32, grad_acc, *sizes, *grad_out.stride(), *grad_acc.stride(), *params,
        ALIGNED=bool(aligned), BLOCK_C=block_c, num_warps=num_warps,
    )  # fmt: skip
    return grad_acc.to(dtype=grad_out.dtype, memory_format=memory_format)
