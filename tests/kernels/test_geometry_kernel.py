"""The Triton box-geometry encoding against its reference under TRITON_INTERPRET=1: values and gradients over odd
box counts and widths, fp16, broadcasting, and writing in place into a wider buffer."""

import pytest
import torch

from vlbert_fast.ops import box_geometry_embedding, box_geometry_embedding_reference

# fp32: the same formula in fp32; sin/cos of angles up to ~200 rad differ by a few ulps of the angle between
# NumPy (interpreter) and PyTorch. fp16: both round the fp32 result once (one fp16 ulp of values in [-1, 1]).
TOLERANCES = {torch.float32: (2e-6, 0.0), torch.float16: (1e-3, 0.0)}


def random_boxes(count: int, seed: int = 0, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor([[640.0, 480.0]]) * (0.5 + torch.rand(count, 1, generator=g))
    xy = torch.rand(count, 2, generator=g) * size - 20.0  # some boxes start beyond the border
    wh = torch.rand(count, 2, generator=g) * size
    wh[::5] = 0.0  # degenerate boxes (zero width and height)
    return torch.cat([xy, xy + wh], dim=1).to(dtype), size


@pytest.mark.parametrize("count", [1, 7, 33])
@pytest.mark.parametrize("dim", [8, 40, 2048])
def test_forward_and_gradients_fp32(count, dim):
    boxes, size = random_boxes(count)
    boxes.requires_grad_(True)
    size.requires_grad_(True)
    got = box_geometry_embedding(boxes, size, dim=dim, backend="triton")
    want = box_geometry_embedding_reference(boxes, size, dim=dim)
    torch.testing.assert_close(got, want, atol=TOLERANCES[torch.float32][0], rtol=0)
    grad = torch.randn(got.shape, generator=torch.Generator().manual_seed(1))
    got_grads = torch.autograd.grad(got, [boxes, size], grad)
    want_grads = torch.autograd.grad(want, [boxes, size], grad)
    for g, w in zip(got_grads, want_grads, strict=True):
        # gradients sum dim/2 terms of size up to 100/W per pixel: compare relative to their scale
        torch.testing.assert_close(g, w, atol=1e-5 * float(w.abs().max()), rtol=1e-5)


def test_fp16_and_broadcast_leading_dims():
    boxes, _ = random_boxes(12, seed=3)
    boxes = boxes.view(3, 4, 4).half()
    size = torch.tensor([[300.0, 200.0], [100.0, 50.0], [64.0, 64.0]])[:, None, :]
    got = box_geometry_embedding(boxes, size, dim=64, backend="triton")
    want = box_geometry_embedding_reference(boxes, size, dim=64)
    assert got.shape == (3, 4, 64) and got.dtype == torch.float16
    torch.testing.assert_close(got, want, atol=TOLERANCES[torch.float16][0], rtol=0)


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_writes_in_place_next_to_the_appearance(backend):
    """The RegionEncoder's buffer: geometry fills columns Dv: of [K, Dv + Dg] and leaves the rest alone."""
    boxes, size = random_boxes(5, seed=4)
    buffer = torch.full((5, 24 + 64), 7.0)
    out = box_geometry_embedding(boxes, size, dim=64, backend=backend, out=buffer[:, 24:])
    assert out.data_ptr() == buffer[:, 24:].data_ptr()
    assert torch.equal(buffer[:, :24], torch.full((5, 24), 7.0))
    torch.testing.assert_close(buffer[:, 24:], box_geometry_embedding_reference(boxes, size, dim=64), atol=2e-6, rtol=0)


def test_out_into_fp16_buffer_and_empty_input():
    boxes, size = random_boxes(3)
    buffer = torch.zeros(3, 40, dtype=torch.float16)
    box_geometry_embedding(boxes, size, dim=32, backend="triton", out=buffer[:, 8:])
    want = box_geometry_embedding_reference(boxes, size, dim=32).half()
    torch.testing.assert_close(buffer[:, 8:], want, atol=1e-3, rtol=0)
    assert box_geometry_embedding(torch.zeros(0, 4), torch.ones(0, 2), dim=16, backend="triton").shape == (0, 16)


@pytest.mark.parametrize(
    "out,match",
    [
        (torch.zeros(3, 16), "out: expected a floating tensor of shape"),
        (torch.zeros(16, 2).t(), "out: the last dimension must be contiguous"),
    ],
)
def test_bad_out_is_named(out, match):
    boxes, size = random_boxes(2)
    with pytest.raises(ValueError, match=match):
        box_geometry_embedding(boxes, size, dim=16, out=out)


def test_out_refuses_boxes_that_need_gradients():
    boxes, size = random_boxes(2)
    with pytest.raises(ValueError, match="out= is not differentiable"):
        box_geometry_embedding(boxes.requires_grad_(True), size, dim=16, out=torch.zeros(2, 16))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_gpu_matches_reference(dtype):
    boxes, size = random_boxes(1000, seed=5)
    boxes, size = boxes.cuda().to(dtype), size.cuda()
    got = box_geometry_embedding(boxes, size, dim=2048, backend="triton")
    want = box_geometry_embedding_reference(boxes, size, dim=2048)
    # GPU sin/cos of angles up to ~200 rad are accurate to a few 1e-6 in fp32; bf16 rounds to 2**-8 of [-1, 1]
    atol = {torch.bfloat16: 8e-3, torch.float16: 1e-3, torch.float32: 2e-5}[dtype]
    torch.testing.assert_close(got, want, atol=atol, rtol=0)
