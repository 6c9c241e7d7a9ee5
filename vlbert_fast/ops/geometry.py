"""Sinusoidal box-geometry encoding of VL-BERT's visual feature path.

The original code's formula (`coordinate_embeddings` in VL-BERT's common/fast_rcnn.py, which differs from the
paper's prose): a box (x1, y1, x2, y2) becomes centre x, centre y, width, height; the x-terms are divided by the
image width W and the y-terms by the height H, then multiplied by `scale` (100). With F = dim / 8 frequencies, each
of the 4 values p gives sin(p / wave_length**(k/F)) for k = 0..F-1, then cos(...) for the same k: 4 x 2F = dim
values, coordinate-major. Widths are x2 - x1 (no +1), as in the original.

Backends: `reference` (plain PyTorch; the specification) and, where Triton is present, `triton`.
"""

from __future__ import annotations

import torch

from .dispatch import Backend, Op, register


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
    b = boxes.to(compute)
    size = image_size.to(compute)
    x1, y1, x2, y2 = b.unbind(-1)
    w_img, h_img = size.unbind(-1)
    pos = (
        torch.stack([(x1 + x2) / 2 / w_img, (y1 + y2) / 2 / h_img, (x2 - x1) / w_img, (y2 - y1) / h_img], dim=-1)
        * scale
    )  # [..., 4]
    freqs = dim // 8
    dim_mat = wave_length ** (torch.arange(freqs, dtype=compute, device=boxes.device) / freqs)  # [F]
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


def _reference_reasons(boxes, image_size, dim=2048, wave_length=1000.0, scale=100.0) -> list[str]:
    return []


GEOMETRY = register(
    Op("box_geometry_embedding", [Backend("reference", box_geometry_embedding_reference, _reference_reasons)])
)


def box_geometry_embedding(
    boxes: torch.Tensor,  # [..., 4] (x1, y1, x2, y2) in image pixels
    image_size: torch.Tensor,  # [..., 2] (W, H)
    dim: int = 2048,
    wave_length: float = 1000.0,
    scale: float = 100.0,
    backend: str = "auto",
) -> torch.Tensor:  # [..., dim]
    """The geometry encoding of boxes (module docstring); `backend` picks the implementation."""
    _check_inputs(boxes, image_size, dim)
    return GEOMETRY(boxes, image_size, dim, wave_length, scale, backend=backend)
