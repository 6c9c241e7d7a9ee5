"""roi_align on a CUDA GPU: the native CUDA kernels and the compiled Triton kernels against the fp64 reference,
including bf16 and channels-last, the deterministic backward's bitwise reproducibility, and stream handling.
Run with `pytest -m gpu` on the GPU machine; skipped elsewhere (tests/conftest.py)."""

import pytest
import torch

from vlbert_fast import _ext
from vlbert_fast.ops import BackendNotSupported, roi_align, roi_align_reference
from vlbert_fast.ops.roi_align import ROI_ALIGN

from .test_roi_align_reference import OUT, SCALE, make_features, make_rois

pytestmark = pytest.mark.gpu


def cuda_native_reason():
    ext = _ext.load()
    if ext is None:
        return _ext.unavailable_reason()
    return None if ext.with_cuda() else "vlbert_fast._C was built without CUDA"


def run(backend, features, rois, sampling_ratio, aligned, deterministic=False, out_size=OUT, scale=SCALE):
    x = features.detach().clone().requires_grad_()
    out = roi_align(x, rois, out_size, scale, sampling_ratio, aligned, backend=backend, deterministic=deterministic)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out.backward(grad_out.to(out.device, out.dtype))
    return out, x.grad, grad_out


def reference(features, rois, sampling_ratio, aligned, grad_out, out_size=OUT, scale=SCALE):
    x = features.detach().double().cpu().requires_grad_()
    out = roi_align_reference(x, rois.double().cpu(), out_size, scale, sampling_ratio, aligned)
    out.backward(grad_out)
    return out, x.grad


def max_err(a, b):
    return (a.double().cpu() - b).abs().max().item()


BACKENDS = ["native", "triton"]


def skip_if_unavailable(backend):
    if backend == "native" and cuda_native_reason():
        pytest.skip(cuda_native_reason())


@pytest.mark.parametrize("channels", [37, 64])  # 64: the CUDA kernels' 16-byte path (float4 atomics); 37: one channel
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 0])
@pytest.mark.parametrize("backend", BACKENDS)
def test_fp32_matches_reference(backend, sampling_ratio, aligned, channels_last, channels):
    skip_if_unavailable(backend)
    x = make_features(channels=channels, dtype=torch.float32, channels_last=channels_last).cuda()
    rois = make_rois(torch.float32).cuda()
    out, grad, grad_out = run(backend, x, rois, sampling_ratio, aligned)
    want, want_grad = reference(x, rois, sampling_ratio, aligned, grad_out)
    # (fp32, 2e-6, 2e-6): as on CPU; the GPU adds only a different summation order
    torch.testing.assert_close(out.double().cpu(), want, atol=2e-6, rtol=2e-6)
    torch.testing.assert_close(grad.double().cpu(), want_grad, atol=2e-6, rtol=2e-6)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_low_precision_within_twice_pytorch_error(backend, dtype, channels_last):
    skip_if_unavailable(backend)
    # a C4-like case: 1024 channels (four Triton channel blocks), 14 x 14 bins at 1/16
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1024, 20, 24, generator=g).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    xy = torch.rand(16, 2, generator=g) * 300
    wh = torch.rand(16, 2, generator=g) * 200
    rois = torch.cat([torch.randint(0, 2, (16, 1), generator=g).float(), xy, xy + wh], 1)
    x, rois = x.cuda(), rois.cuda()
    out, grad, grad_out = run(backend, x, rois, 1, False, out_size=(14, 14), scale=1 / 16)
    want, want_grad = reference(x, rois, 1, False, grad_out, out_size=(14, 14), scale=1 / 16)
    xt = x.detach().clone().requires_grad_()
    torch_out = roi_align_reference(xt, rois, (14, 14), 1 / 16, 1, False, compute_dtype=dtype)
    torch_out.backward(grad_out.to(xt.device, dtype))
    assert out.dtype == dtype and grad.dtype == dtype
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=fmt) and grad.is_contiguous(memory_format=fmt)
    assert max_err(out, want) <= 2 * max_err(torch_out, want)
    assert max_err(grad, want_grad) <= 2 * max_err(xt.grad, want_grad)


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_deterministic_backward_is_bitwise_reproducible(backend):
    # many overlapping boxes on few cells: the atomic scatter would add in a different order from run to run
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64, 12, 12, generator=g).cuda().contiguous(memory_format=torch.channels_last)
    xy = torch.rand(400, 2, generator=g) * 100
    rois = torch.cat([torch.randint(0, 2, (400, 1), generator=g).float(), xy, xy + 90], 1).cuda()
    grads = [run(backend, x, rois, 2, True, deterministic=True, out_size=(7, 7), scale=1 / 8)[1] for _ in range(3)]
    assert all(torch.equal(grads[0], gr) for gr in grads[1:])
    want = run("reference", x, rois, 2, True, out_size=(7, 7), scale=1 / 8)[1]
    torch.testing.assert_close(grads[0], want, atol=1e-4, rtol=1e-4)


def test_native_cuda_declines_deterministic_and_auto_moves_on():
    if cuda_native_reason():
        pytest.skip(cuda_native_reason())
    x, rois = make_features(dtype=torch.float32).cuda(), make_rois(torch.float32).cuda()
    with pytest.raises(BackendNotSupported, match="atomics"):
        roi_align(x, rois, OUT, SCALE, backend="native", deterministic=True)
    reasons = ROI_ALIGN.not_supported_reasons(x, rois, OUT, SCALE, 1, False, True)
    assert reasons["native"] and not reasons["triton"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_runs_on_a_side_stream(backend):
    skip_if_unavailable(backend)
    x, rois = make_features(dtype=torch.float32).cuda(), make_rois(torch.float32).cuda()
    want = roi_align(x, rois, OUT, SCALE, 0, True, backend=backend)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = roi_align(x, rois, OUT, SCALE, 0, True, backend=backend)
    torch.cuda.current_stream().wait_stream(side)
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_native_cuda_under_torch_compile():
    if cuda_native_reason():
        pytest.skip(cuda_native_reason())
    x, rois = make_features(dtype=torch.float32).cuda(), make_rois(torch.float32).cuda()
    fn = lambda f: roi_align(f, rois, OUT, SCALE, 0, False, backend="native").square().sum()  # noqa: E731
    compiled = torch.compile(fn, fullgraph=True)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    compiled(xa).backward()
    fn(xb).backward()
    torch.testing.assert_close(xa.grad, xb.grad)
