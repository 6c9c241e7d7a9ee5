"""Sinusoidal box-geometry encoding of VL-BERT's visual feature path.

The original code's formula (`coordinate_embeddings` in VL-BERT's common/fast_rcnn.py, which differs from the
paper's prose): a box (x1, y1, x2, y2) becomes centre x, centre y, width, height; the x-terms are divided by the
image width W and the y-terms by the height H, then multiplied by `scale` (100). With F = dim / 8 frequencies, each
of the 4 values p gives sin(p / wave_length**(k/F)) for k = 0..F-1, then cos(...) for the same k: 4 x 2F = dim
values, coordinate-major. Widths are x2 - x1 (no +1), as in the original.

Backends: `reference` (plain PyTorch; the specification) and `triton` (kernels/geometry.py; computes in fp32,
rejects fp64). `out=` writes the encoding into a given tensor, e.g. the geometry columns of the visual projection's
input buffer [K, Dv + Dg], so no concatenation pass is needed; that path is not differentiable (boxes are data).
Both are custom ops, `torch.ops.vlbert_fast.box_geometry_embedding` and `..._out` (ops/library.py).
"""

from __future__ import annotations

import torch

from .dispatch import Backend, Op, interpreted, register, triton_reasons
from .library import or_empty, unaliased, use_custom_op, vjp


def box_values(boxes: torch.Tensor, image_size: torch.Tensor, scale: float, compute: torch.dtype) -> torch.Tensor:
    """[..., 4] in `compute`: centre x / W, centre y / H, width / W, height / H, times `scale`."""
    b = boxes.to(compute)
    size = image_size.to(compute)
    x1, y1, x2, y2 = b.unbind(-1)
    w_img, h_img = size.unbind(-1)
    return (
        torch.stack([(x1 + x2) / 2 / w_img, (y1 + y2) / 2 / h_img, (x2 - x1) / w_img, (y2 - y1) / h_img], dim=-1)
        * scale
    )


def frequencies(dim: int, wave_length: float, compute: torch.dtype, device: torch.device) -> torch.Tensor:
    """[dim / 8] divisors wave_length ** (k / F)."""
    freqs = dim // 8
    return wave_length ** (torch.arange(freqs, dtype=compute, device=device) / freqs)


def box_geometry_embedding_reference(
    boxes: torch.Tensor,  # [..., 4] (x1, y1, x2, y2) in image pixels
    image_size: torch.Tensor,  # [..., 2] (W, H), broadcastable against boxes' leading dims
    dim: int = 2048,
    wave_length: float = 1000.0,
    scale: float = 100.0,
) -> torch.Tensor:  # [..., dim] in boxes' dtype
    """Plain-PyTorch specification. Computes in fp32 (fp64 for fp64 input) and returns boxes' dtype."""
    _check_inputs(boxes, image_size, dim)
    compute = torch.float64 if boxes.dtype == torch.float64 else torch.float32
    pos = box_values(boxes, image_size, scale, compute)  # [..., 4]
    dim_mat = frequencies(dim, wave_length, compute, boxes.device)  # [F]
    angles = pos.unsqueeze(-1) / dim_mat  # [..., 4, F]
    out = torch.cat([angles.sin(), angles.cos()], dim=-1)  # [..., 4, 2F]
    return out.flatten(-2).to(boxes.dtype)


def _check_inputs(boxes: torch.Tensor, image_size: torch.Tensor, dim: int) -> None:
    if boxes.shape[-1:] != (4,):
        raise ValueError(f"boxes: expected shape [..., 4] (x1, y1, x2, y2), found {tuple(boxes.shape)}")
    if image_size.shape[-1:] != (2,):
        raise ValueError(f"image_size: expected shape [..., 2] (W, H), found {tuple(image_size.shape)}")
    if not boxes.is_floating_point():
        raise TypeError(f"boxes: expected a floating dtype, found {boxes.dtype}")
    if boxes.device != image_size.device:
        raise ValueError(f"boxes is on {boxes.device} but image_size is on {image_size.device}")
    try:
        torch.broadcast_shapes(boxes.shape[:-1], image_size.shape[:-1])
    except RuntimeError as exc:
        raise ValueError(
            f"image_size: leading shape {tuple(image_size.shape[:-1])} does not broadcast against boxes' "
            f"{tuple(boxes.shape[:-1])}"
        ) from exc
    if dim <= 0 or dim % 8:
        raise ValueError(f"dim: expected a positive multiple of 8 (4 coordinates x sin/cos), found {dim}")


def _check_out(boxes: torch.Tensor, image_size: torch.Tensor, dim: int, out: torch.Tensor) -> None:
    want = (*torch.broadcast_shapes(boxes.shape[:-1], image_size.shape[:-1]), dim)
    if tuple(out.shape) != want or not out.is_floating_point():
        raise ValueError(f"out: expected a floating tensor of shape {want}, found {out.dtype} {tuple(out.shape)}")
    if out.device != boxes.device:
        raise ValueError(f"out is on {out.device} but boxes is on {boxes.device}")
    if out.stride(-1) != 1:
        raise ValueError(f"out: the last dimension must be contiguous (stride 1), found strides {out.stride()}")
    if torch.is_grad_enabled() and (boxes.requires_grad or image_size.requires_grad):
        raise ValueError("out= is not differentiable: boxes or image_size require grad; pass out=None")


def _lead(boxes: torch.Tensor, image_size: torch.Tensor) -> torch.Size:
    return torch.broadcast_shapes(boxes.shape[:-1], image_size.shape[:-1])


def _triton_values(boxes, image_size, scale) -> torch.Tensor:  # [M, 4] fp32, the kernels' input
    return box_values(boxes, image_size, scale, torch.float32).expand(*_lead(boxes, image_size), 4).reshape(-1, 4)


def _forward(boxes, image_size, dim, wave_length, scale, backend, out) -> torch.Tensor:
    """The encoding written into `out` ([..., dim], last dimension contiguous)."""
    if backend == "triton":
        from ..kernels.geometry import box_geometry_forward

        dim_mat = frequencies(dim, wave_length, torch.float32, boxes.device)
        box_geometry_forward(_triton_values(boxes, image_size, scale), dim_mat, out.view(-1, dim))
        return out
    return out.copy_(box_geometry_embedding_reference(boxes, image_size, dim, wave_length, scale))


def _run(backend: str):
    """A backend's differentiable entry: the custom op with that backend (the reference directly in eager mode);
    with `out`, the op vlbert_fast::box_geometry_embedding_out, which writes into it (not differentiable)."""

    def run(boxes, image_size, dim=2048, wave_length=1000.0, scale=100.0, out=None) -> torch.Tensor:
        if out is not None:
            torch.ops.vlbert_fast.box_geometry_embedding_out(boxes, image_size, dim, float(wave_length), float(scale),
                                                             backend, out)  # fmt: skip
            return out
        if not use_custom_op(backend):
            return box_geometry_embedding_reference(boxes, image_size, dim, wave_length, scale)
        return torch.ops.vlbert_fast.box_geometry_embedding(boxes, image_size, dim, float(wave_length), float(scale),
                                                            backend)  # fmt: skip

    return run


def _triton_reasons(boxes, image_size, dim=2048, wave_length=1000.0, scale=100.0, out=None) -> list[str]:
    reasons = triton_reasons({"boxes": boxes, "image_size": image_size, "out": out})
    if not reasons:
        from ..kernels.geometry import MAX_FREQUENCIES

        if dim // 8 > MAX_FREQUENCIES:
            reasons.append(f"dim {dim} is above the kernel's maximum {8 * MAX_FREQUENCIES}")
    if out is not None and out.dim() > 2 and not out.is_contiguous():
        reasons.append("out: a strided view with more than 2 dimensions (the kernel takes rows with one stride)")
    return reasons


GEOMETRY = register(
    Op(
        "box_geometry_embedding",
        [
            Backend(
                "triton", _run("triton"), _triton_reasons, auto_skip=lambda boxes, *a, **k: interpreted(boxes.device)
            ),
            Backend("reference", _run("reference"), lambda *a, **k: []),
        ],
    )
)


# ---------------------------------------------------------------------------------------------------------------------
# the custom ops (ops/library.py): vlbert_fast::box_geometry_embedding (and its backward: gradients of the boxes and
# of a floating image_size), vlbert_fast::box_geometry_embedding_out (writes into `out`, no autograd)


@torch.library.custom_op("vlbert_fast::box_geometry_embedding", mutates_args=())
def _geometry_op(
    boxes: torch.Tensor, image_size: torch.Tensor, dim: int, wave_length: float, scale: float, backend: str
) -> torch.Tensor:
    out = torch.empty((*_lead(boxes, image_size), dim), dtype=boxes.dtype, device=boxes.device)
    return _forward(boxes, image_size, dim, wave_length, scale, backend, out)


@_geometry_op.register_fake
def _(boxes, image_size, dim, wave_length, scale, backend):
    return boxes.new_empty((*_lead(boxes, image_size), dim))


@torch.library.custom_op("vlbert_fast::box_geometry_embedding_out", mutates_args=("out",))
def _geometry_out_op(
    boxes: torch.Tensor,
    image_size: torch.Tensor,
    dim: int,
    wave_length: float,
    scale: float,
    backend: str,
    out: torch.Tensor,
) -> None:
    _forward(boxes, image_size, dim, wave_length, scale, backend, out)


@_geometry_out_op.register_fake
def _(boxes, image_size, dim, wave_length, scale, backend, out):
    return None


@torch.library.custom_op("vlbert_fast::box_geometry_embedding_backward", mutates_args=())
def _geometry_backward_op(
    grad_out: torch.Tensor,
    boxes: torch.Tensor,
    image_size: torch.Tensor,
    dim: int,
    wave_length: float,
    scale: float,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of boxes and image_size (empty when image_size is not floating)."""
    if backend == "triton":
        from ..kernels.geometry import box_geometry_backward

        dim_mat = frequencies(dim, wave_length, torch.float32, boxes.device)
        values = _triton_values(boxes, image_size, scale)
        grad_values = box_geometry_backward(grad_out.reshape(-1, dim), values, dim_mat)
        grads = vjp(lambda b, s: _triton_values(b, s, scale), [boxes, image_size], grad_values)
    else:
        grads = vjp(box_geometry_embedding_reference, [boxes, image_size], grad_out, dim, wave_length, scale)
    grad_boxes, grad_size = grads
    grad_boxes = grad_boxes.to(boxes.dtype)
    grad_size = grad_size.to(image_size.dtype) if grad_size is not None else None
    return unaliased((grad_boxes, or_empty(grad_size, boxes)), (grad_out, boxes, image_size))


@_geometry_backward_op.register_fake
def _(grad_out, boxes, image_size, dim, wave_length, scale, backend):
    grad_size = image_size.new_empty(image_size.shape) if image_size.is_floating_point() else boxes.new_empty(0)
    return boxes.new_empty(boxes.shape), grad_size


def _setup(ctx, inputs, output):
    boxes, image_size, dim, wave_length, scale, backend = inputs
    ctx.save_for_backward(boxes, image_size)
    ctx.args = (dim, wave_length, scale, backend)


def _backward(ctx, grad_out):
    boxes, image_size = ctx.saved_tensors
    grad_boxes, grad_size = _geometry_backward_op(grad_out, boxes, image_size, *ctx.args)
    return grad_boxes, grad_size if image_size.is_floating_point() else None, None, None, None, None


_geometry_op.register_autograd(_backward, setup_context=_setup)


def box_geometry_embedding(
    boxes: torch.Tensor,  # [..., 4] (x1, y1, x2, y2) in image pixels
    image_size: torch.Tensor,  # [..., 2] (W, H)
    dim: int = 2048,
    wave_length: float = 1000.0,
    scale: float = 100.0,
    backend: str = "auto",
    out: torch.Tensor | None = None,  # [..., dim] to write into (e.g. a column slice of a wider buffer)
) -> torch.Tensor:  # [..., dim] in boxes' dtype, or `out`
    """The geometry encoding of boxes (module docstring); `backend` picks the implementation."""
    _check_inputs(boxes, image_size, dim)
    if out is not None:
        _check_out(boxes, image_size, dim, out)
    return GEOMETRY(boxes, image_size, dim, wave_length, scale, out, backend=backend)
