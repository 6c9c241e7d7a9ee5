"""roi_align_reference against an independent scalar spelling of the RoIAlign definition, and the public contract.

Also the shared cases of the backend tests (test_roi_align_native.py, _triton.py, _gpu.py import from here):
features of 3 images, boxes inside, on and beyond the border, outside entirely, zero-size, inverted, tiny, and
random ones, from different images in no particular order.
"""

import math

import pytest
import torch

from vlbert_fast.ops import BackendNotSupported, roi_align, roi_align_reference


@pytest.fixture(autouse=True)
def _debug_checks(monkeypatch):
    """The value checks (a host sync on a GPU) run only in debug mode (ops/library.py); these tests test them."""
    monkeypatch.setenv("VLBERT_FAST_DEBUG_CHECKS", "1")


SCALE = 0.5  # input pixels -> feature cells; dyadic, so box geometry is exact in fp32 and fp64 alike
N, H, W = 3, 5, 6  # feature maps of 10 x 12-pixel images
OUT = (2, 3)  # PH != PW catches transposed axes

# (batch index, x1, y1, x2, y2) in input pixels, with what each exercises
BOXES = [
    ((0, 2.0, 1.5, 9.0, 7.0), "inside"),
    ((2, 6.0, 4.0, 12.0, 10.0), "touching the right and bottom border"),
    ((1, -6.0, -4.0, 16.0, 14.0), "beyond the image on every side"),
    ((0, -3.0, 0.0, 0.0, 9.0), "straddling the left border (samples near x = -1)"),
    ((2, 30.0, 30.0, 40.0, 44.0), "entirely outside: all samples beyond x > W"),
    ((1, 5.0, 3.0, 5.0, 3.0), "zero-size box"),
    ((0, 8.0, 6.0, 4.0, 2.0), "inverted box (x2 < x1, y2 < y1)"),
    ((1, 3.25, 2.125, 3.875, 2.5), "smaller than one cell"),
    ((2, 0.0, 0.0, 11.0, 9.0), "the whole image"),
    # legacy, one sample per bin: samples at x in {2, 4, 6 = W}, y in {3, 5 = H}; at x, y in {-1, ...} below
    ((0, 2.0, 4.0, 14.0, 12.0), "samples exactly on x = W and y = H (inside: clamped to the edge)"),
    ((1, -4.0, -3.0, 8.0, 1.0), "samples exactly on x = -1 and y = -1 (inside: clamped to 0)"),
]


def make_rois(dtype=torch.float64, seed=0, n_random=4) -> torch.Tensor:
    """The named boxes plus `n_random` random ones (non-dyadic coordinates), images out of order."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n_random, 2, generator=g) * torch.tensor([12.0, 10.0])
    wh = torch.rand(n_random, 2, generator=g) * torch.tensor([8.0, 6.0])
    images = torch.tensor([[1.0], [0.0], [2.0], [1.0]]).repeat(n_random // 4 + 1, 1)[:n_random]
    random = torch.cat([images, xy, xy + wh], dim=1)
    named = torch.tensor([box for box, _ in BOXES], dtype=torch.float64)
    return torch.cat([named, random.double()]).to(dtype)


def make_features(channels=3, dtype=torch.float64, seed=0, channels_last=False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, channels, H, W, generator=g, dtype=torch.float64).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def by_hand_matrix(rois, n, h, w, out_size, scale, sampling_ratio, aligned) -> torch.Tensor:
    """[K*PH*PW, n*h*w] fp64: the linear map of RoIAlign, one sample at a time in plain Python floats (Detectron's
    definition as torchvision documents it). Forward = M @ F per channel; gradient = M^T @ G."""
    ph_n, pw_n = out_size
    rows = []
    for b, x1, y1, x2, y2 in rois.double().tolist():
        off = 0.5 if aligned else 0.0
        sx, sy = x1 * scale - off, y1 * scale - off
        rw, rh = x2 * scale - off - sx, y2 * scale - off - sy
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / ph_n, rw / pw_n
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(bh)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(bw)
        count = max(gh * gw, 1)
        for ph in range(ph_n):
            for pw in range(pw_n):
                row = [0.0] * (n * h * w)
                for iy in range(gh):
                    y = sy + ph * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        x = sx + pw * bw + (ix + 0.5) * bw / gw
                        if y < -1.0 or y > h or x < -1.0 or x > w:
                            continue
                        yy, xx = max(y, 0.0), max(x, 0.0)
                        yl, xl = int(yy), int(xx)
                        yh, xh = yl + 1, xl + 1
                        if yl >= h - 1:
                            yl = yh = h - 1
                            yy = float(yl)
                        if xl >= w - 1:
                            xl = xh = w - 1
                            xx = float(xl)
                        ly, lx = yy - yl, xx - xl
                        for cy, cx, wt in ((yl, xl, (1 - ly) * (1 - lx)), (yl, xh, (1 - ly) * lx)):
                            row[(int(b) * h + cy) * w + cx] += wt / count
                        for cy, cx, wt in ((yh, xl, ly * (1 - lx)), (yh, xh, ly * lx)):
                            row[(int(b) * h + cy) * w + cx] += wt / count
                rows.append(row)
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, n * h * w)


def by_hand(features, rois, out_size, scale, sampling_ratio, aligned):
    """(output [K, C, PH, PW], matrix) in fp64."""
    n, c, h, w = features.shape
    m = by_hand_matrix(rois, n, h, w, out_size, scale, sampling_ratio, aligned)
    flat = features.double().permute(1, 0, 2, 3).reshape(c, n * h * w)  # [C, N*H*W]
    out = (flat @ m.T).reshape(c, rois.shape[0], *out_size).permute(1, 0, 2, 3)
    return out, m


def grad_by_hand(m, grad_out, feature_shape):
    n, c, h, w = feature_shape
    g = grad_out.double().permute(1, 0, 2, 3).reshape(c, -1)  # [C, K*PH*PW]
    return (g @ m).reshape(c, n, h, w).permute(1, 0, 2, 3)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 0])
def test_reference_matches_the_definition_by_hand(sampling_ratio, aligned):
    x = make_features().requires_grad_()
    rois = make_rois()
    out = roi_align_reference(x, rois, OUT, SCALE, sampling_ratio, aligned)
    want, m = by_hand(x.detach(), rois, OUT, SCALE, sampling_ratio, aligned)
    # fp64 both ways; the two spellings only differ in the order of a few additions
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    torch.testing.assert_close(x.grad, grad_by_hand(m, grad_out, x.shape), rtol=0, atol=1e-12)


def test_hand_values():
    # 4x4 map holding 4*y + x; box (0,0)-(3,3) at scale 1, 2x2 bins of 1.5 cells, one sample at each bin centre:
    # (0.75, 0.75) -> 3.75, (0.75, 2.25) -> 5.25, (2.25, 0.75) -> 9.75, (2.25, 2.25) -> 11.25 (bilinear is exact
    # on a linear ramp)
    fmap = torch.arange(16.0, dtype=torch.float64).reshape(1, 1, 4, 4)
    out = roi_align_reference(fmap, torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]], dtype=torch.float64), 2, 1.0, 1)
    assert out.flatten().tolist() == [3.75, 5.25, 9.75, 11.25]
    # legacy mode clamps a zero-size box to 1 x 1 cell; aligned mode samples the single point (shifted by -0.5)
    point = torch.tensor([[0.0, 2.0, 1.0, 2.0, 1.0]], dtype=torch.float64)
    assert roi_align_reference(fmap, point, 1, 1.0, 1, aligned=False).item() == 4 * 1.5 + 2.5
    assert roi_align_reference(fmap, point, 1, 1.0, 1, aligned=True).item() == 4 * 0.5 + 1.5
    # samples exactly at y = -1 and y = H are still inside (clamped to the edge row), a hair beyond gives 0
    on_edges = torch.tensor([[0.0, 0.0, -2.0, 3.0, 0.0], [0.0, 0.0, 3.0, 3.0, 5.0]], dtype=torch.float64)
    out = roi_align_reference(fmap, on_edges, (1, 1), 1.0, 1)
    assert out.flatten().tolist() == [1.5, 13.5]
    beyond = torch.tensor([[0.0, 0.0, 3.0, 3.0, 5.0 + 1e-9]], dtype=torch.float64)
    assert roi_align_reference(fmap, beyond, (1, 1), 1.0, 1).item() == 0.0


GRADCHECK_ROIS = [[1, 0.5, 0.25, 5.0, 4.0], [0, -2.0, 1.0, 3.0, 9.0], [1, 3.0, 3.0, 3.0, 3.0]]


@pytest.mark.parametrize("sampling_ratio,aligned", [(1, False), (0, True), (2, True)])
def test_reference_gradcheck(sampling_ratio, aligned):
    x = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(GRADCHECK_ROIS, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: roi_align_reference(f, rois, 2, 0.5, sampling_ratio, aligned), (x,))


def test_empty_rois_and_memory_format():
    x = make_features(channels=4, channels_last=True)
    out = roi_align_reference(x, torch.zeros(0, 5, dtype=torch.float64), OUT, SCALE)
    assert out.shape == (0, 4, *OUT)
    out = roi_align_reference(x, make_rois(), OUT, SCALE)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, roi_align_reference(x.contiguous(), make_rois(), OUT, SCALE), rtol=0, atol=0)


def test_public_reference_backend_is_the_reference():
    x, rois = make_features(), make_rois()
    got = roi_align(x, rois, OUT, SCALE, 0, True, backend="reference")
    torch.testing.assert_close(got, roi_align_reference(x, rois, OUT, SCALE, 0, True), rtol=0, atol=0)


F32 = torch.zeros(2, 3, 4, 4)
BAD = [
    (F32, torch.zeros(3, 4), {}, ValueError, r"rois: expected a tensor of shape \[K, 5\].*found \(3, 4\)"),
    (F32, torch.zeros(5), {}, ValueError, r"rois: expected a tensor of shape \[K, 5\]"),
    (F32[0], torch.zeros(1, 5), {}, ValueError, r"features: expected a tensor of shape \[N, C, H, W\]"),
    (F32.long(), torch.zeros(1, 5), {}, TypeError, "features: expected float32.*found torch.int64"),
    (F32, torch.zeros(1, 5, dtype=torch.float64), {}, TypeError, "rois: expected dtype torch.float32.*float64"),
    (F32.double(), torch.zeros(1, 5), {}, TypeError, "rois: expected dtype torch.float64"),
    (F32.half(), torch.zeros(1, 5, dtype=torch.bfloat16), {}, TypeError, "float16 or torch.float32"),
    (F32, torch.zeros(1, 5, device="meta"), {}, ValueError, "rois: expected the features' device cpu, found meta"),
    (F32, torch.tensor([[2.0, 0, 0, 1, 1]]), {}, ValueError, "batch index.*expected 0..1, found values from 2 to 2"),
    (F32, torch.tensor([[0.0, 0, 0, 1, 1], [-1, 0, 0, 1, 1]]), {}, ValueError, "from -1 to 0"),
    (F32, torch.tensor([[0.5, 0, 0, 1, 1]]), {}, ValueError, "whole numbers, found 0.5 in row 0"),
    (F32, torch.zeros(1, 5), {"output_size": 0}, ValueError, "output_size: expected a positive int"),
    (F32, torch.zeros(1, 5), {"output_size": (2, 2, 2)}, ValueError, "output_size"),
    (F32, torch.zeros(1, 5), {"sampling_ratio": -1}, ValueError, "sampling_ratio: expected an int >= 0"),
    (F32, torch.zeros(1, 5), {"spatial_scale": 0.0}, ValueError, "spatial_scale: expected a positive number"),
    (torch.zeros(1, 3, 0, 4), torch.zeros(1, 5), {}, ValueError, "features: expected H, W > 0"),
]


@pytest.mark.parametrize("features,rois,kwargs,error,match", BAD)
@pytest.mark.parametrize("fn", [roi_align, roi_align_reference], ids=["public", "reference"])
def test_bad_input_names_the_argument(fn, features, rois, kwargs, error, match):
    with pytest.raises(error, match=match):
        fn(features, rois, **kwargs)


def test_unsupported_explicit_backend_says_why():
    with pytest.raises(BackendNotSupported, match="triton.*float64 is not supported"):
        roi_align(make_features(), make_rois(), OUT, SCALE, backend="triton")
    with pytest.raises(BackendNotSupported, match="unknown backend 'cuda'"):
        roi_align(make_features(), make_rois(), OUT, SCALE, backend="cuda")
