"""bias + dropout + residual + LayerNorm: the reference against its definition, the Triton kernel against the
reference under TRITON_INTERPRET=1 (forward and every gradient, fp32 and fp16, odd sizes, dropout by seed)."""

import pytest
import torch
import torch.nn.functional as F

from vlbert_fast.ops import bias_dropout_residual_layer_norm, bias_dropout_residual_layer_norm_reference
from vlbert_fast.ops.embedding import philox_uniform

# fp32: the kernel reduces mean and variance in a different order than PyTorch's LayerNorm (~1e-7 relative);
# the parameter gradients sum over rows in per-program partials. fp16: both round the result once (one ulp).
TOLERANCES = {torch.float32: (2e-5, 1e-5), torch.float16: (4e-3, 4e-3)}


def make_inputs(n, hidden, dtype=torch.float32, with_bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def t(*shape, centre=0.0):
        return (centre + torch.randn(*shape, generator=g)).to(dtype).requires_grad_(True)

    inputs = {"x": t(n, hidden), "bias": t(hidden) if with_bias else None, "residual": t(n, hidden)}
    inputs.update(weight=t(hidden, centre=1.0), ln_bias=t(hidden))
    return inputs, torch.randn(n, hidden, generator=g).to(dtype)


def run(backend, inputs, grad_out, **kwargs):
    y = bias_dropout_residual_layer_norm(*inputs.values(), backend=backend, **kwargs)
    tensors = [v for v in inputs.values() if v is not None]
    return (y, *torch.autograd.grad(y, tensors, grad_out)) if y.numel() else (y,)


def assert_all_close(got, want, atol, rtol):
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.dtype == w.dtype, i
        torch.testing.assert_close(g, w, atol=atol, rtol=rtol, msg=lambda m, i=i: f"output {i}: {m}")


def test_reference_is_the_definition():
    inputs, _ = make_inputs(5, 12)
    x, bias, residual, weight, ln_bias = (t.detach() for t in inputs.values())
    p, seed = 0.25, 99
    y = bias_dropout_residual_layer_norm_reference(x, bias, residual, weight, ln_bias, 1e-5, p, seed, offset=3)
    keep = philox_uniform(seed, 3 + torch.arange(60).view(5, 12)) >= p
    s = residual + torch.where(keep, (x + bias) / (1 - p), 0.0)
    torch.testing.assert_close(y, F.layer_norm(s, (12,), weight, ln_bias, 1e-5))


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("n, hidden", [(1, 48), (13, 37), (70, 64), (3, 768)])
def test_forward_and_every_gradient_fp32(n, hidden, with_bias):
    inputs, grad_out = make_inputs(n, hidden, with_bias=with_bias)
    assert_all_close(run("triton", inputs, grad_out), run("reference", inputs, grad_out), *TOLERANCES[torch.float32])


def test_fp16_and_an_fp32_residual_stream():
    inputs, grad_out = make_inputs(29, 48, torch.float16)
    assert_all_close(run("triton", inputs, grad_out), run("reference", inputs, grad_out), *TOLERANCES[torch.float16])
    inputs["residual"] = inputs["residual"].detach().float().requires_grad_(True)
    got, want = run("triton", inputs, grad_out), run("reference", inputs, grad_out)
    assert got[3].dtype == torch.float32  # the residual's gradient in the residual's dtype
    assert_all_close(got, want, *TOLERANCES[torch.float16])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_dropout_draws_the_reference_mask(dtype):
    inputs, grad_out = make_inputs(19, 40, dtype)
    kwargs = dict(dropout_p=0.3, seed=2024, offset=7)
    assert_all_close(run("triton", inputs, grad_out, **kwargs), run("reference", inputs, grad_out, **kwargs),
                     *TOLERANCES[dtype])  # fmt: skip
    other = run("triton", inputs, grad_out, dropout_p=0.3, seed=2025)
    assert not torch.equal(other[0], run("triton", inputs, grad_out, **kwargs)[0])


def test_empty_rows():
    inputs, grad_out = make_inputs(0, 24)
    assert run("triton", inputs, grad_out)[0].shape == (0, 24)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_low_precision(dtype):
    inputs, grad_out = make_inputs(4099, 768, dtype)
    inputs = {k: None if v is None else v.detach().cuda().requires_grad_(True) for k, v in inputs.items()}
    got = run("triton", inputs, grad_out.cuda(), dropout_p=0.1, seed=1)
    want = run("reference", inputs, grad_out.cuda(), dropout_p=0.1, seed=1)
    assert_all_close(got, want, 3e-2, 2e-2)  # bf16: 8 mantissa bits, one ulp at values up to ~4
