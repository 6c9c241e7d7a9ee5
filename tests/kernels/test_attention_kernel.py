"""The Triton varlen attention kernels against the reference under TRITON_INTERPRET=1: forward and every gradient,
fp32 and fp16, sequences of length 1, primes and mixed lengths in one batch, head dims 64/80/96/128 and small ones,
strided q/k/v, the packed [T, 3, heads, D] entry and its one gradient tensor, empty sequences, and dropout (the
reference's mask in the forward and both backward kernels, reproducible by seed).

The interpreter runs tiles of 16 queries x 32 keys (kernels/utils.py), so lengths 17, 33 and 70 span several blocks
with a ragged last one: the full blocks run unmasked, the last one masked, in every kernel."""

import pytest
import torch

from vlbert_fast.ops import (
    varlen_attention,
    varlen_attention_packed,
    varlen_attention_packed_reference,
    varlen_attention_reference,
)

from ..ops.attention_inputs import cu_seqlens_of, output_and_grads, packed_qkv

# fp32: both compute in fp32; the kernel sums scores and gradients in block order, the reference in one matmul
# (~1e-7 relative per element, a few 1e-7 absolute on values of order 1). fp16: both round the output once; the
# kernel also rounds P and dS to fp16 before their matmuls, as FlashAttention does (one fp16 ulp on values <= 2).
TOLERANCES = {torch.float32: (2e-5, 1e-5), torch.float16: (4e-3, 4e-3)}
MIXED = [1, 17, 5, 31, 2]  # a single token, primes, two blocks with a ragged end


def triton_vs_reference(lengths, heads, head_dim, dtype, **kwargs):
    q, k, v, cu, max_len, grad_out = packed_qkv(lengths, heads, head_dim, dtype)
    args = dict(cu_seqlens=cu, max_seqlen=max_len, **kwargs)
    got = output_and_grads(varlen_attention, q, k, v, grad_out, backend="triton", **args)
    want = output_and_grads(varlen_attention, q, k, v, grad_out, backend="reference", **args)
    return got, want


def assert_all_close(got, want, atol, rtol):
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
        assert g.dtype == w.dtype, name
        torch.testing.assert_close(g, w, atol=atol, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("head_dim", [64, 80, 96, 128])
def test_head_dims_forward_and_every_gradient(head_dim, dtype):
    got, want = triton_vs_reference([1, 17, 3], 1, head_dim, dtype)
    assert_all_close(got, want, *TOLERANCES[dtype])


@pytest.mark.parametrize(
    "lengths", [[1], [13], [16, 32], MIXED], ids=["one token", "a prime", "block multiples", "mixed"]
)
def test_lengths_forward_and_every_gradient_fp32(lengths):
    got, want = triton_vs_reference(lengths, 2, 32, torch.float32)
    assert_all_close(got, want, *TOLERANCES[torch.float32])


@pytest.mark.parametrize("head_dim", [8, 12])
def test_small_head_dims_padded_to_a_tile(head_dim):
    """Head dims below 16 (the tiny model's 12) run in a 16-wide tile with zero columns."""
    got, want = triton_vs_reference(MIXED, 2, head_dim, torch.float32, softmax_scale=0.4)
    assert_all_close(got, want, *TOLERANCES[torch.float32])


def test_fp16_error_is_within_twice_plain_fp16_pytorch():
    """STYLE.md's bound: against fp64, the kernel's fp16 error is at most twice that of PyTorch doing the same
    attention in fp16 (scores, softmax and the product rounded to fp16 as eager fp16 code does)."""
    q, k, v, cu, max_len, _ = packed_qkv(MIXED, 2, 64, torch.float16)
    got = varlen_attention(q, k, v, cu, max_len, backend="triton").detach().double()
    exact = varlen_attention_reference(q.double(), k.double(), v.double(), cu, max_len)
    plain = []
    for start, end in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
        qs, ks, vs = (t.detach()[start:end].transpose(0, 1) for t in (q, k, v))
        probs = torch.softmax((qs @ ks.transpose(1, 2)) * 64**-0.5, dim=-1)  # fp16 in, fp16 out
        plain.append((probs @ vs).transpose(0, 1))
    plain_error = (torch.cat(plain).double() - exact).abs().max()
    assert (got - exact).abs().max() <= 2 * plain_error


def test_strided_views_of_a_fused_projection():
    """The model passes q, k, v as views of one [N, 3, heads, D] projection (token stride 3 * heads * D)."""
    g = torch.Generator().manual_seed(1)
    qkv = torch.randn(sum(MIXED), 3, 2, 16, generator=g, requires_grad=True)
    grad_out = torch.randn(sum(MIXED), 2, 16, generator=g)
    cu = cu_seqlens_of(MIXED)
    results = []
    for backend in ("triton", "reference"):
        out = varlen_attention(qkv[:, 0], qkv[:, 1], qkv[:, 2], cu, max(MIXED), backend=backend)
        results.append((out, *torch.autograd.grad(out, qkv, grad_out)))
    for g_, w_ in zip(*results, strict=True):
        torch.testing.assert_close(g_, w_, atol=2e-5, rtol=1e-5)


def test_empty_sequences_and_a_larger_max_seqlen():
    """Zero-length sequences cost nothing and change nothing; max_seqlen above the longest only adds idle blocks."""
    lengths = [0, 5, 0, 3]
    q, k, v, cu, _, grad_out = packed_qkv(lengths, 1, 16)
    got = output_and_grads(varlen_attention, q, k, v, grad_out, cu_seqlens=cu, max_seqlen=20, backend="triton")
    want = output_and_grads(varlen_attention_reference, q, k, v, grad_out, cu_seqlens=cu, max_seqlen=20)
    assert_all_close(got, want, *TOLERANCES[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_dropout_draws_the_reference_mask(dtype):
    got, want = triton_vs_reference([9, 17, 1], 2, 16, dtype, dropout_p=0.3, seed=1234, offset=5)
    assert_all_close(got, want, *TOLERANCES[dtype])


@pytest.mark.parametrize(
    "dtype, precision", [(torch.float32, "ieee"), (torch.float32, "tf32"), (torch.float16, "tf32")]
)
def test_dropout_mask_over_several_blocks_in_every_kernel(dtype, precision):
    """Rows of 70 and 33 tokens: several query blocks of 16 and key blocks of 32 (full and ragged), so every bit of
    the draw rule (row bit 3, key bits 0, 3, 4) and every tile offset is exercised in the forward, dK/dV and dQ
    kernels; the gradients equal the reference's only if all three kernels drew the forward's mask. Both ways the
    dK/dV kernel draws: each element its own word ("ieee"), and the joined words (the others)."""
    got, want = triton_vs_reference(
        [70, 33, 5], 2, 16, dtype, dropout_p=0.2, seed=2**40 + 99, offset=3, precision=precision
    )
    assert_all_close(got, want, *TOLERANCES[dtype])


def test_packed_entry_forward_and_its_one_gradient():
    """qkv [T, 3, heads, D] in, one [T, 3, heads, D] gradient out, equal to the reference's (with dropout)."""
    g = torch.Generator().manual_seed(3)
    lengths = [40, 1, 17]
    qkv = torch.randn(sum(lengths), 3, 2, 16, generator=g, requires_grad=True)
    grad_out = torch.randn(sum(lengths), 2, 16, generator=g)
    args = dict(cu_seqlens=cu_seqlens_of(lengths), max_seqlen=40, dropout_p=0.1, seed=77)
    results = []
    for backend in ("triton", "reference"):
        out = varlen_attention_packed(qkv, backend=backend, **args)
        results.append((out, *torch.autograd.grad(out, qkv, grad_out)))
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
    want = varlen_attention_packed_reference(qkv, **args)
    torch.testing.assert_close(results[0][0], want, atol=2e-5, rtol=1e-5)


def test_precision_tf32_is_accepted_and_reaches_the_kernels():
    """The interpreter multiplies fp32 exactly whatever the precision (the GPU test bounds TF32's error); an unknown
    precision is an error naming the choices."""
    got, want = triton_vs_reference([9, 3], 1, 16, torch.float32, precision="tf32")
    assert_all_close(got, want, *TOLERANCES[torch.float32])
    q, k, v, cu, max_len, _ = packed_qkv([3], 1, 16)
    with pytest.raises(ValueError, match=r"precision: expected one of \('ieee', 'tf32'\), found 'fp32'"):
        varlen_attention(q, k, v, cu, max_len, precision="fp32")


def test_dropout_reproducible_by_seed():
    q, k, v, cu, max_len, grad_out = packed_qkv([7, 11], 1, 16)
    run = lambda seed: output_and_grads(  # noqa: E731
        varlen_attention, q, k, v, grad_out, cu_seqlens=cu, max_seqlen=max_len, dropout_p=0.5, seed=seed,
        backend="triton",
    )  # fmt: skip
    first, again, other = run(3), run(3), run(4)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)  # bitwise: the mask comes from the seed, the backward has no atomics
    assert not torch.equal(first[0], other[0])
    torch.manual_seed(0)
    unseeded = varlen_attention(q, k, v, cu, max_len, dropout_p=0.5, backend="triton")
    torch.manual_seed(0)
    assert torch.equal(unseeded, varlen_attention(q, k, v, cu, max_len, dropout_p=0.5, backend="triton"))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_gpu_dropout_draws_the_reference_mask_in_compiled_kernels(dtype):
    """The compiled kernels (not the interpreter) draw the reference's mask: rows of VL-BERT's lengths, p = 0.1,
    a seed; fp32 "ieee" against the fp32 reference (compare and select), bf16 and fp16 (the PTX masks,
    kernels/attention_common.py) against the reference on the same inputs within their rounding."""
    lengths = [100, 1, 256, 37, 181, 64]
    q, k, v, cu, max_len, grad_out = packed_qkv(lengths, 4, 64, dtype)
    q, k, v = (t.detach().cuda().requires_grad_(True) for t in (q, k, v))
    args = dict(cu_seqlens=cu.cuda(), max_seqlen=max_len, dropout_p=0.1, seed=2**35 + 5, offset=11)
    got = output_and_grads(varlen_attention, q, k, v, grad_out.cuda(), backend="triton", **args)
    want = output_and_grads(varlen_attention, q, k, v, grad_out.cuda(), backend="reference", **args)
    atol, rtol = (2e-4, 1e-4) if dtype == torch.float32 else (3e-2, 2e-2)
    assert_all_close(got, want, atol, rtol)


@pytest.mark.parametrize(
    "dtype, device, dim",
    [
        (torch.float16, "cpu", 64),  # the interpreter has no bf16
        pytest.param(torch.float16, "cuda", 64, marks=pytest.mark.gpu),
        pytest.param(torch.bfloat16, "cuda", 64, marks=pytest.mark.gpu),
        # head dim 128: the dK/dV tile of 32 queries, whose warps share each Philox call's words through shared memory
        pytest.param(torch.bfloat16, "cuda", 128, marks=pytest.mark.gpu),
    ],
)
def test_dropout_masks_read_back_exactly(dtype, device, dim):
    """The kernels' masks element by element (on a GPU the PTX masks of 16-bit inputs, under the interpreter the
    compare and select): zero queries make every probability 1/L, so values one-hot in the key give out[i, j] =
    keep[i, j] x scale / L (the forward's mask), and output gradients one-hot in the query give dV[j, i] =
    keep[i, j] x scale / L (the dK/dV kernel's)."""
    from vlbert_fast.ops.attention import attention_dropout_keep, dropout_keep_threshold

    length, heads, seed, offset = 64, 2, 2**33 + 17, 5
    total = 2 * length
    one_hot = torch.eye(length, dim).repeat(2, 1)[:, None, :].expand(total, heads, dim).to(dtype).to(device)
    q = torch.zeros(total, heads, dim, dtype=dtype, device=device, requires_grad=True)
    k = torch.randn(total, heads, dim, dtype=dtype, device=device, requires_grad=True)
    v = one_hot.clone().requires_grad_(True)
    cu = torch.tensor([0, length, total], dtype=torch.int32, device=device)
    out = varlen_attention(q, k, v, cu, length, dropout_p=0.1, seed=seed, offset=offset, backend="triton")
    out.backward(one_hot)
    _, scale = dropout_keep_threshold(0.1)
    for start in (0, length):
        keep = attention_dropout_keep(seed, offset, start, length, heads, total, length, 0.1, torch.device(device))
        rows = slice(start, start + length)
        forward = out[rows].float().permute(1, 0, 2) * length / scale  # [heads, query, key (value dim)]
        assert torch.equal(forward[..., :length].round().bool(), keep)
        grad_v = v.grad[rows].float().permute(1, 2, 0) * length / scale  # [heads, query (value dim), key]
        assert torch.equal(grad_v[:, :length].round().bool(), keep)
        assert not forward[..., length:].any() and not grad_v[:, length:].any()  # value dims past the one-hot


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["tf32", "ieee"])
def test_gpu_fp32_precisions_against_fp64(precision):
    """fp32 on a GPU: "ieee" within fp32 rounding of the fp64 result, "tf32" within TF32's (10-bit products)."""
    lengths = [128, 1, 200, 77]
    q, k, v, cu, max_len, grad_out = packed_qkv(lengths, 4, 64)
    q, k, v = (t.detach().cuda().requires_grad_(True) for t in (q, k, v))
    grad_out, cu = grad_out.cuda(), cu.cuda()
    args = dict(cu_seqlens=cu, max_seqlen=max_len)
    got = output_and_grads(varlen_attention, q, k, v, grad_out, backend="triton", precision=precision, **args)
    q64, k64, v64 = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    exact = output_and_grads(varlen_attention, q64, k64, v64, grad_out.double(), backend="reference", **args)
    bound = 2e-4 if precision == "ieee" else 2e-2
    for name, g, e in zip(("out", "dq", "dk", "dv"), got, exact, strict=True):
        assert (g.double() - e).abs().max() <= bound * e.abs().max(), name


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("head_dim", [64, 80, 96, 128])
def test_gpu_low_precision_against_fp32_reference(head_dim, dtype):
    """On a GPU, with realistic lengths: bf16/fp16 within twice the error of PyTorch's own low-precision SDPA."""
    lengths = [100, 1, 256, 37, 181, 64]
    q, k, v, cu, max_len, grad_out = packed_qkv(lengths, 4, head_dim, dtype)
    q, k, v = (t.detach().cuda().requires_grad_(True) for t in (q, k, v))
    grad_out, cu = grad_out.cuda(), cu.cuda()
    args = dict(cu_seqlens=cu, max_seqlen=max_len)
    got = output_and_grads(varlen_attention, q, k, v, grad_out, backend="triton", **args)
    low = output_and_grads(varlen_attention, q, k, v, grad_out, backend="sdpa", **args)
    q32, k32, v32 = (t.detach().float().requires_grad_(True) for t in (q, k, v))
    exact = output_and_grads(varlen_attention, q32, k32, v32, grad_out.float(), backend="reference", **args)
    for name, g, s, e in zip(("out", "dq", "dk", "dv"), got, low, exact, strict=True):
        kernel_error = (g.float() - e).abs().max()
        assert kernel_error <= 2 * (s.float() - e).abs().max() + 1e-3, name
