"""box_geometry_embedding: the original formula by hand, in fp64, and the op's contract."""

import math

import pytest
import torch

from vlbert_fast.ops import BackendNotSupported, box_geometry_embedding, box_geometry_embedding_reference


def by_hand(box, w, h, dim, wave=1000.0, scale=100.0):
    """Independent scalar spelling of the original `coordinate_embeddings` (VL-BERT common/utils/bbox.py)."""
    x1, y1, x2, y2 = box
    values = [(x1 + x2) / 2 / w * scale, (y1 + y2) / 2 / h * scale, (x2 - x1) / w * scale, (y2 - y1) / h * scale]
    freqs = dim // 8
    out = []
    for p in values:
        angles = [p / wave ** (k / freqs) for k in range(freqs)]
        out += [math.sin(a) for a in angles] + [math.cos(a) for a in angles]
    return out


BOXES = [
    ((0.0, 0.0, 639.0, 479.0), "whole image"),
    ((600.0, 400.0, 639.0, 479.0), "touching the right and bottom border"),
    ((10.0, 20.0, 10.0, 60.0), "degenerate zero-width box"),
    ((5.5, 7.25, 5.5, 7.25), "a point"),
    ((-20.0, -10.0, 700.0, 500.0), "beyond the image on every side"),
]


@pytest.mark.parametrize("box,what", BOXES, ids=[w for _, w in BOXES])
@pytest.mark.parametrize("dim", [8, 64, 2048])
def test_matches_formula_by_hand_fp64(box, what, dim):
    got = box_geometry_embedding(torch.tensor([box], dtype=torch.float64), torch.tensor([[640.0, 480.0]]), dim=dim)
    want = torch.tensor([by_hand(box, 640.0, 480.0, dim)], dtype=torch.float64)
    assert got.dtype == torch.float64 and got.shape == (1, dim)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_hand_values_of_the_whole_image_box():
    # centre x = 319.5/640*100 = 49.921875; k = 0 gives sin/cos of the raw value; the width term of a zero-width
    # box is sin(0) = 0, cos(0) = 1 for every frequency.
    out = box_geometry_embedding(
        torch.tensor([[0.0, 0.0, 639.0, 479.0]], dtype=torch.float64),
        torch.tensor([[640.0, 480.0]], dtype=torch.float64),
        dim=16,
    )
    assert out[0, 0].item() == pytest.approx(math.sin(49.921875), abs=1e-15)
    assert out[0, 2].item() == pytest.approx(math.cos(49.921875), abs=1e-15)
    assert out[0, 1].item() == pytest.approx(math.sin(49.921875 / 1000**0.5), abs=1e-15)
    zero_w = box_geometry_embedding(
        torch.tensor([[3.0, 0.0, 3.0, 10.0]], dtype=torch.float64),
        torch.tensor([[640.0, 480.0]], dtype=torch.float64),
        dim=16,
    )
    assert zero_w[0, 8:10].tolist() == [0.0, 0.0] and zero_w[0, 10:12].tolist() == [1.0, 1.0]


def test_broadcasts_leading_dims_and_keeps_dtype():
    boxes = torch.rand(3, 5, 4) * 100
    boxes[..., 2:] += boxes[..., :2]
    size = torch.tensor([[300.0, 200.0], [100.0, 50.0], [64.0, 64.0]])[:, None, :]
    out = box_geometry_embedding(boxes, size, dim=32)
    assert out.shape == (3, 5, 32) and out.dtype == torch.float32
    flat = box_geometry_embedding(boxes.reshape(-1, 4), size.expand(3, 5, 2).reshape(-1, 2), dim=32)
    torch.testing.assert_close(out.reshape(-1, 32), flat)
    half = box_geometry_embedding(boxes.half(), size.half(), dim=32)
    assert half.dtype == torch.float16
    # computed in fp32, rounded once: within fp16 rounding of the fp32 result of the same (fp16) inputs
    torch.testing.assert_close(
        half.float(), box_geometry_embedding(boxes.half().float(), size.half().float(), dim=32), atol=1e-3, rtol=0
    )


def test_empty_input():
    out = box_geometry_embedding(torch.zeros(0, 4), torch.zeros(0, 2), dim=16)
    assert out.shape == (0, 16)


@pytest.mark.parametrize(
    "boxes,size,dim,match",
    [
        (torch.zeros(2, 3), torch.ones(2, 2), 16, "boxes: expected shape"),
        (torch.zeros(2, 4), torch.ones(2, 3), 16, "image_size: expected shape"),
        (torch.zeros(2, 4), torch.ones(3, 2), 16, "does not broadcast"),
        (torch.zeros(2, 4), torch.ones(2, 2), 12, "multiple of 8"),
        (torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 2), 16, "floating dtype"),
    ],
)
def test_bad_input_names_the_argument(boxes, size, dim, match):
    with pytest.raises((ValueError, TypeError), match=match):
        box_geometry_embedding(boxes, size, dim=dim)


def test_explicit_unknown_backend_lists_choices():
    with pytest.raises(BackendNotSupported, match="unknown backend 'cuda'.*reference"):
        box_geometry_embedding(torch.zeros(1, 4), torch.ones(1, 2), dim=16, backend="cuda")


def test_reference_backend_is_the_reference():
    boxes = torch.tensor([[1.0, 2.0, 30.0, 40.0]])
    size = torch.tensor([[50.0, 60.0]])
    torch.testing.assert_close(
        box_geometry_embedding(boxes, size, dim=64, backend="reference"),
        box_geometry_embedding_reference(boxes, size, dim=64),
        rtol=0,
        atol=0,
    )
