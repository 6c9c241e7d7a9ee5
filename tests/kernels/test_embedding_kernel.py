"""The Triton fused embedding against its reference under TRITON_INTERPRET=1: forward and every gradient over odd
streams and hidden sizes, fp32 and fp16, both scatter modes, and dropout (the same mask as the reference)."""

import math

import pytest
import torch

from vlbert_fast.ops import fused_embedding, fused_embedding_reference
from vlbert_fast.ops.embedding import EMBEDDING

from ..ops.streams import grad_inputs, op_args, random_visual, random_weights, token_stream

STREAMS = {
    "one text-only token": ([(1, 0)], 0),
    "one roi": ([(0, 1)], 0),
    "text-only rows": ([(4, 0), (2, 0)], 1),
    "many rois": ([(1, 17)], 0),
    "mixed rows and padding": ([(5, 2), (3, 0), (2, 3)], 2),
}
# fp32: the kernel sums in the reference's order; LayerNorm reductions and atomic adds differ in order (~1e-7
# relative). fp16: both round a fp32 result once, so they differ by at most one fp16 ulp (~1e-3 relative, values
# up to ~6).
TOLERANCES = {torch.float32: (3e-5, 1e-5), torch.float16: (1e-2, 2e-3)}


def run(backend, stream, visual, weights, grad_out=None, **kwargs):
    out = fused_embedding(*op_args(stream, visual, weights), backend=backend, **kwargs)
    if grad_out is None:
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(out.dtype)
    inputs = grad_inputs(visual, weights)
    # allow_unused: the reference's graph skips what a stream does not use (no regions: no visual, no [IMG])
    grads = torch.autograd.grad(out, list(inputs.values()), grad_out, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(inputs.values(), grads, strict=True)]
    return out, dict(zip(inputs, grads, strict=True))


def assert_all_close(got, want, atol, rtol):
    out_g, grads_g = got
    out_w, grads_w = want
    torch.testing.assert_close(out_g, out_w, atol=atol, rtol=rtol)
    for name in grads_w:
        assert grads_g[name].dtype == grads_w[name].dtype, name
        torch.testing.assert_close(
            grads_g[name], grads_w[name], atol=atol, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}"
        )


@pytest.mark.parametrize("case", list(STREAMS))
@pytest.mark.parametrize("hidden", [37, 64])
def test_forward_and_every_gradient_fp32(case, hidden):
    samples, pad = STREAMS[case]
    stream = token_stream(samples, pad=pad)
    visual, weights = random_visual(stream, hidden), random_weights(hidden)
    assert_all_close(
        run("triton", stream, visual, weights), run("reference", stream, visual, weights), *TOLERANCES[torch.float32]
    )


@pytest.mark.parametrize("hidden", [2, 5, 128])
def test_tiny_and_wide_hidden_sizes(hidden):
    # (H = 1 is left out: the normalised value is exactly 0, which the kernel gets, while PyTorch's LayerNorm
    # backward amplifies its rounding by rstd = 1e6 and reports a non-zero weight gradient.)
    stream = token_stream([(2, 2), (1, 0)], pad=1)
    visual, weights = random_visual(stream, hidden), random_weights(hidden)
    assert_all_close(
        run("triton", stream, visual, weights), run("reference", stream, visual, weights), *TOLERANCES[torch.float32]
    )


def test_every_gradient_is_exercised():
    """The mixed stream reaches every input: a kernel that dropped one would fail against a non-zero reference."""
    stream = token_stream(STREAMS["mixed rows and padding"][0], pad=2)
    _, grads = run("reference", stream, random_visual(stream, 16), random_weights(16))
    assert [name for name, g in grads.items() if g.abs().sum() == 0] == []


def test_fp16_matches_reference_and_beats_plain_fp16():
    stream = token_stream([(5, 4), (3, 0)], pad=1)
    hidden = 48
    visual, weights = random_visual(stream, hidden, dtype=torch.float16), random_weights(hidden, dtype=torch.float16)
    got, want = run("triton", stream, visual, weights), run("reference", stream, visual, weights)
    assert got[0].dtype == torch.float16
    assert_all_close(got, want, *TOLERANCES[torch.float16])
    # STYLE.md's bound: error against fp64 at most twice that of PyTorch doing the op in fp16 throughout
    w64 = type(weights)(**{k: v.detach().double() for k, v in weights.tensors().items()})
    exact = fused_embedding_reference(*op_args(stream, visual.detach().double(), w64))
    plain16 = plain_fp16_embedding(stream, visual.detach(), weights)
    kernel_error = (got[0].double() - exact).abs().max()
    assert kernel_error <= 2 * (plain16.double() - exact).abs().max(), kernel_error


def plain_fp16_embedding(stream, visual, w):
    """The formula with every step in fp16 (sums and LayerNorms in half precision), the baseline precision."""
    from vlbert_fast.vocabulary import TokenKind

    kind, region = stream["token_kind"], stream["visual_index"].clamp(min=0)
    h = w.word.shape[1]
    ln = torch.nn.functional.layer_norm
    d = {k: v.detach() for k, v in w.tensors().items()}
    x = d["position"][stream["position_ids"]] + d["token_type"][stream["token_type_ids"]]
    is_word = (kind == TokenKind.TEXT) | (kind == TokenKind.TEXT_ONLY) | (kind == TokenKind.PAD)
    x = x + torch.where(is_word[:, None], d["word"][stream["word_ids"]], 0)
    special = torch.where(stream["region_masked"][region][:, None], d["object_mask_word"], d["object_word"])
    x = x + torch.where((kind == TokenKind.ROI)[:, None], special, 0)
    x = x + torch.where((kind == TokenKind.END)[:, None], d["end"], 0)
    x = x + torch.where((kind == TokenKind.TEXT_ONLY)[:, None], d["text_visual"], 0)
    text = ln(visual, (h,), d["visual_ln_text_weight"], d["visual_ln_text_bias"], 1e-12)[region]
    obj = ln(visual, (h,), d["visual_ln_object_weight"], d["visual_ln_object_bias"], 1e-12)[region]
    x = (
        x
        + torch.where((kind == TokenKind.TEXT)[:, None], text, 0)
        + torch.where((kind == TokenKind.ROI)[:, None], obj, 0)
    )
    return ln(x, (h,), d["ln_weight"], d["ln_bias"], 1e-12)


def test_mixed_dtypes_and_int32_indices():
    """fp32 region features into fp16 tables (autocast-style), int32 ids: output in the word table's dtype."""
    stream = {k: (v.int() if k != "region_masked" else v) for k, v in token_stream([(3, 2)]).items()}
    visual, weights = random_visual(stream, 24), random_weights(24, dtype=torch.float16)
    got, want = run("triton", stream, visual, weights), run("reference", stream, visual, weights)
    assert got[0].dtype == torch.float16 and got[1]["visual"].dtype == torch.float32
    assert_all_close(got, want, *TOLERANCES[torch.float16])


def test_strided_tables_and_empty_stream():
    stream = token_stream([(2, 1)])
    big = torch.randn(29, 40, requires_grad=True)
    weights = random_weights(24)
    weights = type(weights)(**{**weights.tensors(), "word": big[:, 8:32]})  # rows with stride 40
    visual = random_visual(stream, 24)
    assert_all_close(run("triton", stream, visual, weights), run("reference", stream, visual, weights), 3e-5, 1e-5)
    empty = {k: v[:0] for k, v in stream.items()}
    out = fused_embedding(*op_args(empty, visual[:0], weights), backend="triton")
    assert out.shape == (0, 24)


def test_deterministic_mode_equals_reference_and_repeats_bitwise():
    stream = token_stream([(4, 3), (3, 0), (1, 5)], pad=2)
    visual, weights = random_visual(stream, 40), random_weights(40)
    first = run("triton", stream, visual, weights, deterministic=True)
    assert_all_close(first, run("reference", stream, visual, weights), *TOLERANCES[torch.float32])
    second = run("triton", stream, visual, weights, deterministic=True)
    for name in first[1]:
        assert torch.equal(first[1][name], second[1][name]), name


def test_dropout_draws_the_reference_mask():
    stream = token_stream([(4, 3), (2, 0)], pad=1)
    visual, weights = random_visual(stream, 32), random_weights(32)
    kwargs = dict(dropout_p=0.25, seed=2024, offset=96)
    got, want = run("triton", stream, visual, weights, **kwargs), run("reference", stream, visual, weights, **kwargs)
    assert torch.equal(got[0] == 0, want[0] == 0)  # the very same elements dropped
    assert_all_close(got, want, *TOLERANCES[torch.float32])
    again = run("triton", stream, visual, weights, **kwargs)
    assert torch.equal(got[0], again[0])
    other = fused_embedding(*op_args(stream, visual, weights), backend="triton", dropout_p=0.25, seed=2025)
    assert not torch.equal(other == 0, got[0] == 0)


def test_dropout_keep_rate_of_the_kernel():
    stream = token_stream([(20, 11)])
    hidden, p = 256, 0.1
    weights = random_weights(hidden, requires_grad=False)
    with torch.no_grad():
        out = fused_embedding(
            *op_args(stream, random_visual(stream, hidden), weights), backend="triton", dropout_p=p, seed=9
        )
    kept = float((out != 0).float().mean())
    assert abs(kept - (1 - p)) < 5 * math.sqrt(p * (1 - p) / out.numel())  # 5 standard deviations


def test_auto_runs_triton_kernels_on_a_gpu_only():
    stream = token_stream([(1, 1)])
    args = op_args(stream, random_visual(stream, 8), random_weights(8))
    assert EMBEDDING.select("auto", *args).name == ("triton" if torch.cuda.is_available() else "reference")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_gpu_matches_reference(dtype):
    stream = {k: v.cuda() for k, v in token_stream([(30, 20), (17, 0), (9, 41)], pad=7, vocab=29).items()}
    hidden = 768
    visual = random_visual(stream, hidden, dtype=dtype).detach().cuda().requires_grad_()
    weights = random_weights(hidden, dtype=dtype, requires_grad=False)
    weights = type(weights)(**{k: v.cuda().requires_grad_() for k, v in weights.tensors().items()})
    atol, rtol = {torch.bfloat16: (6e-2, 1e-2), torch.float16: (1e-2, 2e-3), torch.float32: (3e-5, 1e-5)}[dtype]
    for kwargs in ({}, {"dropout_p": 0.1, "seed": 77}, {"deterministic": True}):
        got, want = (
            run("triton", stream, visual, weights, **kwargs),
            run("reference", stream, visual, weights, **kwargs),
        )
        assert torch.equal(got[0] == 0, want[0] == 0) or dtype != torch.float32
        assert_all_close(got, want, atol, rtol)
