"""roi_align, native backend (vlbert_fast._C's C++ CPU code) against the fp64 reference: forward and the gradient
w.r.t. the features, every box case, sampling ratios 1, 2 and adaptive, both aligned settings; gradcheck and
gradgradcheck in fp64; the torch.library registration (opcheck, torch.compile)."""

import pytest
import torch

from vlbert_fast import _ext
from vlbert_fast.ops import roi_align, roi_align_reference

from .test_roi_align_reference import GRADCHECK_ROIS, OUT, SCALE, H, N, W, make_features, make_rois

pytestmark = pytest.mark.skipif(_ext.load() is None, reason=f"vlbert_fast._C unavailable: {_ext.unavailable_reason()}")

# (dtype, atol, rtol) against the fp64 reference on the same (rounded) inputs:
# fp64 - the same arithmetic in another order; fp32 - box geometry and <= 64-term sums in fp32 of O(1) values.
EXACT = [(torch.float64, 1e-12, 0.0), (torch.float32, 2e-6, 2e-6)]


def run(features, rois, sampling_ratio, aligned, backend="native", **kw):
    x = features.detach().clone().requires_grad_()
    out = roi_align(x, rois, OUT, SCALE, sampling_ratio, aligned, backend=backend, **kw)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out.backward(grad_out.to(out.dtype))
    return out, x.grad, grad_out


def reference(features, rois, sampling_ratio, aligned, grad_out):
    x = features.detach().double().requires_grad_()
    out = roi_align_reference(x, rois.double(), OUT, SCALE, sampling_ratio, aligned)
    out.backward(grad_out)
    return out, x.grad


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 0])
@pytest.mark.parametrize("dtype,atol,rtol", EXACT)
def test_native_matches_reference(dtype, atol, rtol, sampling_ratio, aligned):
    x, rois = make_features(channels=3, dtype=dtype), make_rois(dtype)
    out, grad, grad_out = run(x, rois, sampling_ratio, aligned)
    want, want_grad = reference(x, rois, sampling_ratio, aligned, grad_out)
    assert out.dtype == dtype and out.shape == (rois.shape[0], 3, *OUT)
    torch.testing.assert_close(out.double(), want, atol=atol, rtol=rtol)
    torch.testing.assert_close(grad.double(), want_grad, atol=atol, rtol=rtol)


def max_err(a, b):
    return (a.double() - b).abs().max().item()


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 0])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_native_low_precision_within_twice_pytorch_error(dtype, sampling_ratio, aligned):
    # STYLE 6: against the fp64 result on the same rounded inputs, the kernel (fp32 sums, one rounding at the end)
    # may be at most twice as far off as PyTorch computing the same op in `dtype` (the reference with fp16/bf16
    # weights and products). fp32 boxes, the recommended pairing with low-precision features.
    x, rois = make_features(channels=5, dtype=dtype), make_rois(torch.float32)
    out, grad, grad_out = run(x, rois, sampling_ratio, aligned)
    want, want_grad = reference(x, rois, sampling_ratio, aligned, grad_out)
    xt = x.detach().clone().requires_grad_()
    torch_out = roi_align_reference(xt, rois, OUT, SCALE, sampling_ratio, aligned, compute_dtype=dtype)
    torch_out.backward(grad_out.to(dtype))
    assert out.dtype == dtype and grad.dtype == dtype
    assert max_err(out, want) <= 2 * max_err(torch_out, want)
    assert max_err(grad, want_grad) <= 2 * max_err(xt.grad, want_grad)


@pytest.mark.parametrize("channels", [1, 7])
def test_channels_last_and_odd_channel_counts(channels):
    x = make_features(channels=channels, channels_last=True)
    rois = make_rois()
    out, grad, grad_out = run(x, rois, 2, True)
    want, want_grad = reference(x, rois, 2, True, grad_out)
    assert out.is_contiguous(memory_format=torch.channels_last) or channels == 1
    assert grad.is_contiguous(memory_format=torch.channels_last) or channels == 1
    torch.testing.assert_close(out, want, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad, want_grad, atol=1e-12, rtol=0)
    sliced = make_features(channels=2 * channels)[:, ::2]  # neither layout: read through strides, no copy needed
    torch.testing.assert_close(
        roi_align(sliced, rois, OUT, SCALE, 0, False, backend="native"),
        roi_align_reference(sliced, rois, OUT, SCALE, 0, False),
        atol=1e-12,
        rtol=0,
    )


def test_empty_rois_and_one_by_one_maps():
    x = make_features(channels=3).requires_grad_()
    out = roi_align(x, torch.zeros(0, 5, dtype=torch.float64), OUT, SCALE, backend="native")
    assert out.shape == (0, 3, *OUT)
    out.sum().backward()
    assert x.grad.shape == x.shape and not x.grad.any()
    tiny = torch.randn(2, 3, 1, 1, dtype=torch.float64)
    rois = torch.tensor([[1, 0.0, 0.0, 1.0, 1.0], [0, -3.0, -3.0, 5.0, 2.0], [1, 0.5, 0.5, 0.5, 0.5]]).double()
    for sampling_ratio, aligned in ((1, False), (0, True), (2, True)):
        got = roi_align(tiny, rois, (2, 2), 1.0, sampling_ratio, aligned, backend="native")
        torch.testing.assert_close(got, roi_align_reference(tiny, rois, (2, 2), 1.0, sampling_ratio, aligned))


@pytest.mark.parametrize("sampling_ratio,aligned", [(1, False), (0, True), (2, True)])
def test_native_gradcheck_and_gradgradcheck(sampling_ratio, aligned):
    x = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(GRADCHECK_ROIS, dtype=torch.float64)
    fn = lambda f: roi_align(f, rois, 2, 0.5, sampling_ratio, aligned, backend="native")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))  # the backward is registered as differentiable too


def test_backward_is_deterministic_and_matches_with_one_thread():
    # the CPU backward owns disjoint channel ranges per thread: the same bits whatever the thread count
    x, rois = make_features(channels=8, dtype=torch.float32), make_rois(torch.float32).repeat(3, 1)
    _, grad_a, _ = run(x, rois, 0, False, deterministic=True)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _, grad_b, _ = run(x, rois, 0, False, deterministic=True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(grad_a, grad_b)


def test_registered_custom_ops_pass_opcheck():
    x = make_features(channels=2).requires_grad_()
    rois = make_rois()
    torch.library.opcheck(torch.ops.vlbert_fast.roi_align_native_forward.default, (x, rois, 2, 3, SCALE, 0, True))
    grad_out = torch.randn(rois.shape[0], 2, 2, 3, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(
        torch.ops.vlbert_fast.roi_align_native_backward.default, (grad_out, rois, N, H, W, SCALE, 0, True, False)
    )


def test_torch_compile_traces_the_native_op_without_graph_breaks():
    x = make_features(channels=2, dtype=torch.float32)
    rois = make_rois(torch.float32)

    def pooled_sum(features):
        return roi_align(features, rois, OUT, SCALE, 0, False, backend="native").square().sum()

    compiled = torch.compile(pooled_sum, backend="aot_eager", fullgraph=True)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    got, want = compiled(xa), pooled_sum(xb)
    got.backward()
    want.backward()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(xa.grad, xb.grad)
