"""bias + GELU: the Triton kernel against the reference under TRITON_INTERPRET=1, forward and both gradients."""

import pytest
import torch
import torch.nn.functional as F

from vlbert_fast.ops import bias_gelu, bias_gelu_reference

# fp32: erf and exp in the kernel against PyTorch's (a few ulp); the bias gradient sums rows in per-program
# partials. fp16: one rounding of the result each (one ulp at values up to ~4).
TOLERANCES = {torch.float32: (2e-5, 1e-5), torch.float16: (4e-3, 4e-3)}


def run(backend, x, bias, grad_out):
    y = bias_gelu(x, bias, backend=backend)
    return (y, *torch.autograd.grad(y, (x, bias), grad_out)) if y.numel() else (y,)


def make(n, cols, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, bias = (torch.randn(*s, generator=g).mul(2).to(dtype).requires_grad_(True) for s in ((n, cols), (cols,)))
    return x, bias, torch.randn(n, cols, generator=g).to(dtype)


def test_reference_is_bert_gelu():
    x, bias, _ = make(3, 7, torch.float32)
    z = (x + bias).detach()
    torch.testing.assert_close(bias_gelu_reference(x, bias), 0.5 * z * (1 + torch.erf(z / 2**0.5)))
    torch.testing.assert_close(bias_gelu_reference(x, bias), F.gelu(z))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("n, cols", [(1, 96), (13, 37), (5, 1500), (70, 64)])
def test_forward_and_both_gradients(n, cols, dtype):
    x, bias, grad_out = make(n, cols, dtype)
    got, want = run("triton", x, bias, grad_out), run("reference", x, bias, grad_out)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.dtype == w.dtype
        torch.testing.assert_close(g, w, atol=TOLERANCES[dtype][0], rtol=TOLERANCES[dtype][1], msg=f"output {i}")


def test_strided_input_and_empty_rows():
    x, bias, grad_out = make(6, 40, torch.float32)
    wide = torch.randn(6, 50, requires_grad=True)
    got, want = run("triton", wide[:, 5:45], bias, grad_out), run("reference", wide[:, 5:45], bias, grad_out)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=2e-5, rtol=1e-5)
    assert bias_gelu(x[:0], bias, backend="triton").shape == (0, 40)


@pytest.mark.gpu
def test_gpu_bf16():
    x, bias, grad_out = make(4097, 3072, torch.bfloat16)
    x, bias = (t.detach().cuda().requires_grad_(True) for t in (x, bias))
    got, want = run("triton", x, bias, grad_out.cuda()), run("reference", x, bias, grad_out.cuda())
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=5e-2, rtol=2e-2)  # bf16: one ulp at values up to ~8
