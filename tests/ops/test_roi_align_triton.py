"""roi_align, triton backend under the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1) against the
fp64 reference: forward, the scatter (atomic) gradient and the deterministic gather gradient, every box case,
sampling ratios 1, 2 and adaptive, both aligned settings. Shapes stay tiny: the interpreter costs about a
millisecond per program. bf16 is tested on the GPU only (test_roi_align_gpu.py): the interpreter mishandles it."""

import pytest
import torch

from vlbert_fast.ops import roi_align, roi_align_reference

from .test_roi_align_reference import OUT, SCALE, make_features, make_rois

pytest.importorskip("triton")
from vlbert_fast.kernels import roi_align as roi_align_kernels  # noqa: E402
from vlbert_fast.kernels.roi_align import roi_align_backward  # noqa: E402


def deterministic_grad(features, rois, sampling_ratio, aligned, grad_out):
    """The gather backward through its launcher, on the same output gradient (no second forward)."""
    return roi_align_backward(
        grad_out.to(features.dtype), rois, tuple(features.shape), torch.contiguous_format, SCALE, sampling_ratio,
        aligned, deterministic=True,
    )  # fmt: skip


def cases(dtype):
    # the named boxes (every category) and two random ones: interpreter time grows with the number of boxes
    return make_features(channels=3 if dtype == torch.float32 else 5, dtype=dtype), make_rois(torch.float32, n_random=2)


def run(features, rois, sampling_ratio, aligned):
    x = features.detach().clone().requires_grad_()
    out = roi_align(x, rois, OUT, SCALE, sampling_ratio, aligned, backend="triton")
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out.backward(grad_out.to(out.dtype))
    return out, x.grad, grad_out


def reference(features, rois, sampling_ratio, aligned, grad_out):
    x = features.detach().double().requires_grad_()
    out = roi_align_reference(x, rois.double(), OUT, SCALE, sampling_ratio, aligned)
    out.backward(grad_out)
    return out, x.grad


def max_err(a, b):
    return (a.double() - b).abs().max().item()


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 0])
def test_triton_fp32_matches_reference(sampling_ratio, aligned):
    # (fp32, atol 2e-6, rtol 2e-6): box geometry and <= 64-term sums in fp32 of O(1) values
    x, rois = cases(torch.float32)
    out, grad, grad_out = run(x, rois, sampling_ratio, aligned)
    want, want_grad = reference(x, rois, sampling_ratio, aligned, grad_out)
    assert out.dtype == torch.float32 and out.shape == (rois.shape[0], 3, *OUT)
    torch.testing.assert_close(out.double(), want, atol=2e-6, rtol=2e-6)
    torch.testing.assert_close(grad.double(), want_grad, atol=2e-6, rtol=2e-6)
    grad_det = deterministic_grad(x, rois, sampling_ratio, aligned, grad_out)
    torch.testing.assert_close(grad_det.double(), want_grad, atol=2e-6, rtol=2e-6)


@pytest.mark.parametrize("sampling_ratio,aligned", [(1, False), (0, True)])
def test_triton_fp16_within_twice_pytorch_error(sampling_ratio, aligned):
    # STYLE 6: at most twice the error of PyTorch computing the same op in fp16 (the reference with fp16 weights
    # and products), both against fp64 on the same rounded inputs; fp32 boxes, as recommended for fp16 features.
    # The fp16 path differs from fp32 only in the loads and the one store, so two settings suffice: VL-BERT's
    # (legacy, one sample) and the other extreme (aligned, adaptive).
    x, rois = cases(torch.float16)
    out, grad, grad_out = run(x, rois, sampling_ratio, aligned)
    want, want_grad = reference(x, rois, sampling_ratio, aligned, grad_out)
    xt = x.detach().clone().requires_grad_()
    torch_out = roi_align_reference(xt, rois, OUT, SCALE, sampling_ratio, aligned, compute_dtype=torch.float16)
    torch_out.backward(grad_out.half())
    assert out.dtype == torch.float16 and grad.dtype == torch.float16
    assert max_err(out, want) <= 2 * max_err(torch_out, want)
    assert max_err(grad, want_grad) <= 2 * max_err(xt.grad, want_grad)
    grad_det = deterministic_grad(x, rois, sampling_ratio, aligned, grad_out)
    assert grad_det.dtype == torch.float16 and max_err(grad_det, want_grad) <= 2 * max_err(xt.grad, want_grad)


@pytest.mark.parametrize("channels_last", [True, False])
def test_layouts_and_several_channel_blocks(channels_last, monkeypatch):
    # 7 channels in blocks of 4 (the cap lowered for the test, as 300+ channels would be under the default cap of
    # 256): two programs per bin or cell, the second one partly masked. Output and gradient keep the features'
    # memory format.
    monkeypatch.setattr(roi_align_kernels, "MAX_BLOCK_C", 4)
    x = make_features(channels=7, dtype=torch.float32, channels_last=channels_last)
    rois = make_rois(torch.float32)[::3]
    out, grad, grad_out = run(x, rois, 1, False)
    want, want_grad = reference(x, rois, 1, False, grad_out)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=fmt) and grad.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(out.double(), want, atol=2e-6, rtol=2e-6)
    torch.testing.assert_close(grad.double(), want_grad, atol=2e-6, rtol=2e-6)
    if channels_last:  # the gather kernel's channel blocks, once (its output layout does not depend on the input's)
        grad_det = deterministic_grad(x, rois, 1, False, grad_out)
        torch.testing.assert_close(grad_det.double(), want_grad, atol=2e-6, rtol=2e-6)


def test_odd_bins_and_channel_blocks_both_backwards(monkeypatch):
    # one program per (box, bin row) walks its row's bins: 3 x 5 bins (odd, PH != PW), 9 channels in blocks of 8
    # (the second block one channel wide), adaptive and aligned, every named box (edges included)
    monkeypatch.setattr(roi_align_kernels, "MAX_BLOCK_C", 8)
    x = make_features(channels=9, dtype=torch.float32, channels_last=True)
    rois = make_rois(torch.float32, n_random=0)
    xt = x.detach().clone().requires_grad_()
    out = roi_align(xt, rois, (3, 5), SCALE, 0, True, backend="triton")
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out.backward(grad_out.float())
    # the reference with fp32 geometry, as the kernel's: at 3 x 5 bins the box coordinates are not dyadic, and the
    # boxes built to put samples exactly on x = -1 / y = -1 land on either side of that edge in fp32 and fp64
    xr = x.detach().clone().requires_grad_()
    want = roi_align_reference(xr, rois, (3, 5), SCALE, 0, True).double()
    want.backward(grad_out)
    torch.testing.assert_close(out.double(), want, atol=2e-6, rtol=2e-6)
    torch.testing.assert_close(xt.grad.double(), xr.grad.double(), atol=2e-6, rtol=2e-6)
    grad_det = roi_align_backward(grad_out.float(), rois, tuple(x.shape), torch.channels_last, SCALE, 0, True, True)
    torch.testing.assert_close(grad_det.double(), xr.grad.double(), atol=2e-6, rtol=2e-6)


def test_launch_config_gives_each_thread_16_bytes_of_channels():
    # what makes every tap one 128-bit load (the static sm_90 scorecard shows the LDG.E.128)
    assert roi_align_kernels._row_launch_config(1024, 2) == (1024, 4)  # bf16: 8 channels x 128 threads
    assert roi_align_kernels._row_launch_config(1024, 4) == (1024, 8)  # fp32: 4 channels x 256 threads
    assert roi_align_kernels._row_launch_config(7, 4) == (8, 1)
    with pytest.raises(ValueError, match="2\\*\\*31"):
        roi_align_kernels._check_plane(1024, 2048, 1024)


def test_empty_rois_and_one_by_one_maps():
    x = make_features(channels=3, dtype=torch.float32).requires_grad_()
    out = roi_align(x, torch.zeros(0, 5), OUT, SCALE, backend="triton")
    assert out.shape == (0, 3, *OUT)
    out.sum().backward()
    assert x.grad.shape == x.shape and not x.grad.any()
    tiny = torch.randn(2, 3, 1, 1)
    rois = torch.tensor([[1, 0.0, 0.0, 1.0, 1.0], [0, -3.0, -3.0, 5.0, 2.0], [1, 0.5, 0.5, 0.5, 0.5]])
    grad_out = torch.randn(3, 3, 2, 2)
    for sampling_ratio, aligned, deterministic in ((1, False, False), (0, True, True), (2, True, False)):
        xt, xr = tiny.clone().requires_grad_(), tiny.double().requires_grad_()
        got = roi_align(xt, rois, (2, 2), 1.0, sampling_ratio, aligned, backend="triton", deterministic=deterministic)
        want = roi_align_reference(xr, rois.double(), (2, 2), 1.0, sampling_ratio, aligned)
        got.backward(grad_out)
        want.backward(grad_out.double())
        torch.testing.assert_close(got.double(), want, atol=2e-6, rtol=2e-6)
        torch.testing.assert_close(xt.grad.double(), xr.grad, atol=2e-6, rtol=2e-6)
