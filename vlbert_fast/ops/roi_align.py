"""RoIAlign (He et al., "Mask R-CNN", 2017) with the semantics of `torchvision.ops.roi_align`.

`roi_align(features [N, C, H, W], rois [K, 5]) -> [K, C, PH, PW]`. A box (batch index, x1, y1, x2, y2) in input
pixels maps to feature cells as start = x1 * spatial_scale - offset, end = x2 * spatial_scale - offset, with
offset 0.5 when `aligned` (pixel centres at half-integers) and 0 in the legacy mode (`aligned=False`, what VL-BERT
and Detectron's original RoIAlign use), which also clamps the box width and height to at least one cell. Each
output bin averages grid_h x grid_w bilinear samples at the centres of a regular sub-grid of the bin; the grid is
`sampling_ratio` per axis, or ceil(bin size) when it is 0 (adaptive); the divisor is max(grid_h * grid_w, 1). A
sample with y < -1 or y > H (x likewise) contributes 0; otherwise its coordinates are clamped to [0, size - 1]
before interpolating. Gradients flow to the features only; boxes get none, as in torchvision.

Dtypes: features fp32/fp64/fp16/bf16; rois in the features' dtype, or fp32 with fp16/bf16 features (the better
choice: bf16 cannot hold pixel coordinates exactly). Sums are fp32 (fp64 for fp64) and rounded once. The output
and the features' gradient keep the features' memory format (channels-last in, channels-last out).

Backends, in the order `auto` tries them:
- `native`: vlbert_fast._C (csrc/), C++ on CPU tensors and CUDA on GPU tensors, behind its own custom ops
  (`torch.ops.vlbert_fast.roi_align_native_forward` / `roi_align_native_backward`).
- `triton`: kernels/roi_align.py, on CUDA tensors (or any tensors under TRITON_INTERPRET=1); fp16/bf16/fp32.
- `reference`: `roi_align_reference`, plain PyTorch, the specification.
All three run behind the custom op `torch.ops.vlbert_fast.roi_align` (and `roi_align_backward`; ops/library.py), so
torch.compile traces it without graph breaks; differentiable twice with every backend (the backward is linear in the
gradient, so its derivative is the forward).

`deterministic=True` asks for a backward whose result does not depend on scheduling (bitwise reproducible). Who
honours it: `reference` (matrix products and indexing, no atomics), `native` on CPU (its backward is parallel over
channels and always deterministic), `triton` (a per-feature-cell gather instead of atomics). The CUDA backward of
`native` adds with atomics, so `native` rejects `deterministic=True` on GPU tensors.
"""

from __future__ import annotations

import contextlib

import torch

from .. import _ext
from .dispatch import Backend, Op, register, triton_reasons
from .library import debug_checks, use_custom_op, vjp

_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _pair(output_size) -> tuple[int, int]:
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"output_size: expected a positive int or a pair of them, found {output_size!r}")
    return size


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    """channels_last when t is stored NHWC (and not also plain-contiguous), else contiguous_format."""
    if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _check_inputs(features, rois, output_size, spatial_scale, sampling_ratio) -> tuple[int, int]:
    """Shape, dtype, device and value checks; each error names the argument, what was expected and found."""
    if not isinstance(features, torch.Tensor) or features.dim() != 4:
        found = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"features: expected a tensor of shape [N, C, H, W], found {found}")
    if not isinstance(rois, torch.Tensor) or rois.dim() != 2 or rois.shape[1] != 5:
        found = tuple(rois.shape) if isinstance(rois, torch.Tensor) else type(rois).__name__
        raise ValueError(f"rois: expected a tensor of shape [K, 5] (batch index, x1, y1, x2, y2), found {found}")
    if features.dtype not in _FLOATS:
        raise TypeError(f"features: expected float32, float64, float16 or bfloat16, found {features.dtype}")
    low_precision = features.dtype in (torch.float16, torch.bfloat16)
    if rois.dtype != features.dtype and not (low_precision and rois.dtype == torch.float32):
        allowed = f"{features.dtype} or torch.float32" if low_precision else str(features.dtype)
        raise TypeError(f"rois: expected dtype {allowed} to match features ({features.dtype}), found {rois.dtype}")
    if rois.device != features.device:
        raise ValueError(f"rois: expected the features' device {features.device}, found {rois.device}")
    if features.shape[2] == 0 or features.shape[3] == 0:
        raise ValueError(f"features: expected H, W > 0, found shape {tuple(features.shape)}")
    size = _pair(output_size)
    if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, int) or sampling_ratio < 0:
        raise ValueError(f"sampling_ratio: expected an int >= 0 (0 = adaptive), found {sampling_ratio!r}")
    if not float(spatial_scale) > 0:
        raise ValueError(f"spatial_scale: expected a positive number, found {spatial_scale!r}")
    # The batch-index check reads values (one device sync on GPU): debug mode only (ops/library.py); without it
    # every kernel treats an out-of-range index as an empty box instead of reading out of bounds.
    if rois.shape[0] and debug_checks():
        batch = rois[:, 0].detach()
        lo, hi, whole = torch.stack([batch.min(), batch.max(), (batch == batch.floor()).all()]).tolist()
        if not whole:
            row = int((batch != batch.floor()).nonzero()[0, 0])
            raise ValueError(
                f"rois: column 0 holds batch indices, expected whole numbers, found {batch[row].item()} in row {row}"
            )
        if lo < 0 or hi >= features.shape[0]:
            raise ValueError(
                f"rois: batch index (column 0) out of range for {features.shape[0]} feature maps: expected 0.."
                f"{features.shape[0] - 1}, found values from {lo:g} to {hi:g}"
            )
    return size


def _axis_weights_reference(start, bin_size, grid, pooled: int, size: int, dtype) -> torch.Tensor:
    """[K, pooled, size]: summed bilinear weights of each bin's samples along one axis (the axis' share of the
    separable interpolation). start, bin_size: [K]; grid: [K] samples per bin (int)."""
    max_grid = max(int(grid.max()), 1) if grid.numel() else 1
    i = torch.arange(max_grid, device=start.device)
    p = torch.arange(pooled, device=start.device)
    used = i < grid[:, None, None]  # [K, 1, G]: rows beyond a box's own grid do not exist
    step = bin_size[:, None, None] / grid.clamp(min=1)[:, None, None]
    coord = start[:, None, None] + p[:, None] * bin_size[:, None, None] + (i + 0.5) * step  # [K, P, G]
    coord = torch.where(used, coord, torch.zeros((), dtype=coord.dtype, device=coord.device))
    inside = used & (coord >= -1) & (coord <= size)  # the y < -1 or y > H rule
    v = coord.clamp(min=0, max=size)
    low = v.floor().long()
    at_end = low >= size - 1  # at or beyond the last cell centre: all weight on the last cell
    low = torch.where(at_end, size - 1, low)
    high = torch.where(at_end, size - 1, low + 1)
    frac = torch.where(at_end, 0.0, v - low)
    cells = torch.arange(size, device=start.device)
    w = (1 - frac)[..., None] * (cells == low[..., None]) + frac[..., None] * (cells == high[..., None])
    return (w * inside[..., None]).sum(dim=2).to(dtype)  # [K, P, size]


def roi_align_reference(
    features: torch.Tensor,  # [N, C, H, W]
    rois: torch.Tensor,  # [K, 5] (batch index, x1, y1, x2, y2) in input pixels
    output_size=(14, 14),
    spatial_scale: float = 1 / 16,
    sampling_ratio: int = 1,
    aligned: bool = False,
    *,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:  # [K, C, PH, PW] in features' dtype and memory format
    """Plain-PyTorch specification (module docstring), differentiable w.r.t. the features through autograd.

    Bilinear interpolation is separable and so is the zero rule, so a bin's average is Wy @ F @ Wx^T with Wy
    [PH, H] the summed y-weights of the bin's samples and Wx [PW, W] the x-weights: two matrix products per image.
    Computes in fp64 for fp64 features and fp32 otherwise; `compute_dtype` overrides the dtype of the weights and
    products (tests use fp16 to measure what PyTorch's own rounding costs); box geometry stays fp32/fp64.
    """
    oh, ow = _check_inputs(features, rois, output_size, spatial_scale, sampling_ratio)
    compute = compute_dtype or (torch.float64 if features.dtype == torch.float64 else torch.float32)
    geom = torch.float64 if compute == torch.float64 else torch.float32
    N, C, H, W = features.shape
    r = rois.detach().to(geom)
    offset = 0.5 if aligned else 0.0
    start_x, start_y = r[:, 1] * spatial_scale - offset, r[:, 2] * spatial_scale - offset
    roi_w = r[:, 3] * spatial_scale - offset - start_x
    roi_h = r[:, 4] * spatial_scale - offset - start_y
    if not aligned:  # legacy: at least one cell wide and high
        roi_w, roi_h = roi_w.clamp(min=1), roi_h.clamp(min=1)
    bin_w, bin_h = roi_w / ow, roi_h / oh

    def grid_of(bin_size):
        if sampling_ratio > 0:
            return torch.full_like(bin_size, sampling_ratio, dtype=torch.long)
        return bin_size.ceil().clamp(min=0, max=1048576).long()  # adaptive; none for a negative (aligned) box

    grid_h, grid_w = grid_of(bin_h), grid_of(bin_w)
    wy = _axis_weights_reference(start_y, bin_h, grid_h, oh, H, compute)  # [K, PH, H]
    wx = _axis_weights_reference(start_x, bin_w, grid_w, ow, W, compute)  # [K, PW, W]
    count = (grid_h * grid_w).clamp(min=1).to(compute)
    fmaps = features.to(compute)
    batch = r[:, 0].long()
    out = torch.zeros((rois.shape[0], C, oh, ow), dtype=compute, device=features.device)
    for n in range(N):
        idx = (batch == n).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        rows = torch.einsum("kph,chw->kcpw", wy[idx], fmaps[n])  # interpolate along y
        pooled = torch.einsum("kcpw,kqw->kcpq", rows, wx[idx])  # then along x
        out = out.index_copy(0, idx, pooled)
    out = out / count[:, None, None, None]
    return out.to(features.dtype).contiguous(memory_format=_memory_format(features))


# ---- native: vlbert_fast._C behind torch.library custom ops -------------------------------------------------------


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _on_device(t: torch.Tensor):
    """Make t's GPU the current device for the launch (csrc/ has no device guard of its own)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _stream(t: torch.Tensor) -> int:
    """The current CUDA stream of t's device as an integer (csrc/ takes it so it needs no ATen CUDA headers)."""
    return torch.cuda.current_stream(t.device).cuda_stream if t.is_cuda else 0


@torch.library.custom_op("vlbert_fast::roi_align_native_forward", mutates_args=())
def _native_forward(
    features: torch.Tensor,
    rois: torch.Tensor,
    pooled_height: int,
    pooled_width: int,
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    ext = _ext.load()
    if ext is None:
        raise RuntimeError(f"roi_align native backend: {_ext.unavailable_reason()}")
    channels_last = _memory_format(features) == torch.channels_last
    boxes = rois.to(_acc_dtype(features.dtype)).contiguous()
    with _on_device(features):
        return ext.roi_align_forward(
            features,
            boxes,
            pooled_height,
            pooled_width,
            spatial_scale,
            sampling_ratio,
            aligned,
            channels_last,
            _stream(features),
        )


@_native_forward.register_fake
def _(features, rois, pooled_height, pooled_width, spatial_scale, sampling_ratio, aligned):
    out = features.new_empty((rois.shape[0], features.shape[1], pooled_height, pooled_width))
    return out.contiguous(memory_format=_memory_format(features))


@torch.library.custom_op("vlbert_fast::roi_align_native_backward", mutates_args=())
def _native_backward(
    grad_output: torch.Tensor,
    rois: torch.Tensor,
    batch_size: int,
    height: int,
    width: int,
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
    channels_last: bool,
) -> torch.Tensor:
    ext = _ext.load()
    if ext is None:
        raise RuntimeError(f"roi_align native backend: {_ext.unavailable_reason()}")
    boxes = rois.to(_acc_dtype(grad_output.dtype)).contiguous()
    with _on_device(grad_output):
        return ext.roi_align_backward(
            grad_output,
            boxes,
            batch_size,
            height,
            width,
            sampling_ratio,
            spatial_scale,
            aligned,
            channels_last,
            _stream(grad_output),
        )


@_native_backward.register_fake
def _(grad_output, rois, batch_size, height, width, spatial_scale, sampling_ratio, aligned, channels_last):
    out = grad_output.new_empty((batch_size, grad_output.shape[1], height, width))
    return out.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _forward_setup(ctx, inputs, output):
    features, rois, _, _, spatial_scale, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.args = (features.shape[0], features.shape[2], features.shape[3], spatial_scale, sampling_ratio, aligned)
    ctx.channels_last = _memory_format(features) == torch.channels_last


def _forward_grad(ctx, grad_output):
    (rois,) = ctx.saved_tensors
    grad = _native_backward(grad_output, rois, *ctx.args, ctx.channels_last)
    return grad, None, None, None, None, None, None


def _backward_setup(ctx, inputs, output):
    grad_output, rois, _, _, _, spatial_scale, sampling_ratio, aligned, _ = inputs
    ctx.save_for_backward(rois)
    ctx.args = (grad_output.shape[2], grad_output.shape[3], spatial_scale, sampling_ratio, aligned)


def _backward_grad(ctx, grad_grad):
    # RoIAlign is linear in the features, so the backward is its adjoint and the adjoint's derivative is the forward
    (rois,) = ctx.saved_tensors
    return _native_forward(grad_grad, rois, *ctx.args), None, None, None, None, None, None, None, None


_native_forward.register_autograd(_forward_grad, setup_context=_forward_setup)
_native_backward.register_autograd(_backward_grad, setup_context=_backward_setup)


# ---- capability checks and dispatch ------------------------------------------------------------------------------


def _native_reasons(features, rois, output_size, spatial_scale, sampling_ratio, aligned, deterministic) -> list[str]:
    reasons = []
    if _ext.load() is None:
        return [f"vlbert_fast._C unavailable: {_ext.unavailable_reason()}"]
    if features.device.type == "cuda":
        if not _ext.load().with_cuda():
            reasons.append("features are on CUDA but vlbert_fast._C was built without CUDA (no nvcc or CPU torch)")
        if deterministic:
            reasons.append("deterministic=True: the CUDA backward adds with atomics (use triton or reference)")
    elif features.device.type != "cpu":
        reasons.append(f"features are on {features.device.type}; the native kernels run on cpu and cuda")
    return reasons


def _triton_reasons(features, rois, output_size, spatial_scale, sampling_ratio, aligned, deterministic) -> list[str]:
    return triton_reasons({"features": features, "rois": rois})


def _run(backend: str):
    """A backend's differentiable entry: the custom op vlbert_fast::roi_align with that backend (the reference
    directly in eager mode)."""

    def run(features, rois, output_size, spatial_scale, sampling_ratio, aligned, deterministic):
        if not use_custom_op(backend):
            return roi_align_reference(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
        return torch.ops.vlbert_fast.roi_align(features, rois, *output_size, float(spatial_scale), sampling_ratio,
                                               aligned, deterministic, backend)  # fmt: skip

    return run


def _no_reasons(*args, **kwargs) -> list[str]:
    return []


# `auto` tries native first: on CUDA its kernels now issue fewer hot-loop instructions per output element than
# Triton's in both directions (static sm_90 scorecard, bf16, C = 1024, 14 x 14: forward 0.56 against 0.64, scatter
# backward 0.36 against 0.65; benchmarks/results/sm90_static.md), and it also runs fp64 and the CPU. Triton takes
# deterministic=True on CUDA, which the native backward declines. GPU timings of the two are owed.
ROI_ALIGN = register(
    Op(
        "roi_align",
        [
            Backend("native", _run("native"), _native_reasons),
            Backend("triton", _run("triton"), _triton_reasons),
            Backend("reference", _run("reference"), _no_reasons),
        ],
    )
)


# ---- the custom ops (ops/library.py): vlbert_fast::roi_align over every backend, and its backward ---------------


@torch.library.custom_op("vlbert_fast::roi_align", mutates_args=())
def _roi_align_op(
    features: torch.Tensor,
    rois: torch.Tensor,
    pooled_height: int,
    pooled_width: int,
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
    deterministic: bool,
    backend: str,
) -> torch.Tensor:
    size = (pooled_height, pooled_width)
    if backend == "native":
        out = _native_forward(features, rois, *size, spatial_scale, sampling_ratio, aligned)
    elif backend == "triton":
        from ..kernels.roi_align import roi_align_forward

        out = roi_align_forward(features, rois, size, spatial_scale, sampling_ratio, aligned)
    else:
        out = roi_align_reference(features, rois, size, spatial_scale, sampling_ratio, aligned)
    return out.contiguous(memory_format=_memory_format(features))


@_roi_align_op.register_fake
def _(features, rois, pooled_height, pooled_width, spatial_scale, sampling_ratio, aligned, deterministic, backend):
    out = features.new_empty((rois.shape[0], features.shape[1], pooled_height, pooled_width))
    return out.contiguous(memory_format=_memory_format(features))


@torch.library.custom_op("vlbert_fast::roi_align_backward", mutates_args=())
def _roi_align_backward_op(
    grad_out: torch.Tensor,
    rois: torch.Tensor,
    batch_size: int,
    height: int,
    width: int,
    channels_last: bool,
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
    deterministic: bool,
    backend: str,
) -> torch.Tensor:
    """The features' gradient [N, C, H, W] in grad_out's dtype and the features' memory format."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    shape = (batch_size, grad_out.shape[1], height, width)
    if backend == "native":
        grad = _native_backward(grad_out, rois, batch_size, height, width, spatial_scale, sampling_ratio, aligned,
                                channels_last)  # fmt: skip
    elif backend == "triton":
        from ..kernels.roi_align import roi_align_backward

        grad = roi_align_backward(grad_out, rois, shape, memory_format, spatial_scale, sampling_ratio, aligned,
                                  deterministic)  # fmt: skip
    else:  # RoIAlign is linear in the features: the adjoint at zero features is the adjoint anywhere
        features = grad_out.new_zeros(shape).contiguous(memory_format=memory_format)
        (grad,) = vjp(roi_align_reference, [features], grad_out, rois, (grad_out.shape[2], grad_out.shape[3]),
                      spatial_scale, sampling_ratio, aligned)  # fmt: skip
    return grad.contiguous(memory_format=memory_format)


@_roi_align_backward_op.register_fake
def _(grad_out, rois, batch_size, height, width, channels_last, spatial_scale, sampling_ratio, aligned, deterministic,
      backend):  # fmt: skip
    grad = grad_out.new_empty((batch_size, grad_out.shape[1], height, width))
    return grad.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _op_setup(ctx, inputs, output):
    features, rois, _, _, spatial_scale, sampling_ratio, aligned, deterministic, backend = inputs
    ctx.save_for_backward(rois)
    channels_last = _memory_format(features) == torch.channels_last
    ctx.args = (features.shape[0], features.shape[2], features.shape[3], channels_last, spatial_scale, sampling_ratio,
                aligned, deterministic, backend)  # fmt: skip


def _op_grad(ctx, grad_out):
    (rois,) = ctx.saved_tensors
    return _roi_align_backward_op(grad_out, rois, *ctx.args), None, None, None, None, None, None, None, None


def _op_backward_setup(ctx, inputs, output):
    grad_out, rois, _, _, _, _, spatial_scale, sampling_ratio, aligned, deterministic, backend = inputs
    ctx.save_for_backward(rois)
    ctx.args = (grad_out.shape[2], grad_out.shape[3], spatial_scale, sampling_ratio, aligned, deterministic, backend)


def _op_backward_grad(ctx, grad_grad):
    # linear in the features: the adjoint's derivative is the forward, on the incoming gradient
    (rois,) = ctx.saved_tensors
    return (_roi_align_op(grad_grad, rois, *ctx.args), *[None] * 10)


_roi_align_op.register_autograd(_op_grad, setup_context=_op_setup)
_roi_align_backward_op.register_autograd(_op_backward_grad, setup_context=_op_backward_setup)


def roi_align(
    features: torch.Tensor,  # [N, C, H, W], any memory format
    rois: torch.Tensor,  # [K, 5] (batch index, x1, y1, x2, y2) in input-image pixels
    output_size=(14, 14),
    spatial_scale: float = 1 / 16,
    sampling_ratio: int = 1,
    aligned: bool = False,
    backend: str = "auto",
    *,
    deterministic: bool = False,
) -> torch.Tensor:  # [K, C, PH, PW]
    """RoIAlign with torchvision.ops.roi_align semantics (module docstring); `backend` picks the implementation,
    `deterministic` asks for a bitwise-reproducible backward (honoured by the backends listed above)."""
    size = _check_inputs(features, rois, output_size, spatial_scale, sampling_ratio)
    return ROI_ALIGN(
        features, rois, size, spatial_scale, sampling_ratio, bool(aligned), bool(deterministic), backend=backend
    )
