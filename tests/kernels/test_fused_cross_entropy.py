"""The chunked fused linear + cross-entropy (Triton row kernel, and the PyTorch chunked loop) equals the unfused
F.linear + F.cross_entropy: loss and every gradient, with and without ignored labels, chunk sizes that do and do not
divide the rows, vocabularies over one kernel block, fp16."""

import pytest
import torch
import torch.nn.functional as F

from vlbert_fast.ops import cross_entropy, linear_cross_entropy
from vlbert_fast.ops.cross_entropy import CROSS_ENTROPY, LOGITS_BUDGET_BYTES, MIN_CHUNK_ROWS, default_chunk_size

# fp32: the same logits; log-sum-exp and the weight gradient summed chunk by chunk (~1e-7 relative).
# fp16: logits rounded to fp16 in both; the fused path also rounds dlogits to fp16 before its matmuls (Liger does
# the same), about one fp16 ulp of each gradient.
TOLERANCES = {torch.float32: (1e-5, 1e-5), torch.float16: (3e-3, 3e-3)}


def make(rows, hidden, vocab, dtype=torch.float32, ignored_every=0, with_bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, hidden, generator=g).to(dtype).requires_grad_(True)
    weight = (0.5 * torch.randn(vocab, hidden, generator=g)).to(dtype).requires_grad_(True)
    bias = torch.randn(vocab, generator=g).to(dtype).requires_grad_(True) if with_bias else None
    labels = torch.randint(0, vocab, (rows,), generator=g)
    if ignored_every:
        labels[::ignored_every] = -100
    return x, weight, bias, labels


def loss_and_grads(backend, x, weight, bias, labels, **kwargs):
    loss = linear_cross_entropy(x, weight, bias, labels, backend=backend, **kwargs)
    tensors = [t for t in (x, weight, bias) if t is not None]
    return (loss, *torch.autograd.grad(2.5 * loss, tensors))  # a non-unit upstream gradient reaches every part


def assert_all_close(got, want, atol, rtol):
    for name, g, w in zip(("loss", "dx", "dweight", "dbias"), got, want, strict=False):
        assert g.dtype == w.dtype, name
        torch.testing.assert_close(g, w, atol=atol, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("backend", ["triton", "chunked"])
@pytest.mark.parametrize("ignored_every", [0, 3], ids=["all labelled", "some ignored"])
@pytest.mark.parametrize("chunk_size", [1, 4, None])
def test_equals_unfused_loss_and_gradients(backend, ignored_every, chunk_size):
    inputs = make(13, 24, 97, ignored_every=ignored_every)
    got = loss_and_grads(backend, *inputs, chunk_size=chunk_size)
    assert_all_close(got, loss_and_grads("reference", *inputs), *TOLERANCES[torch.float32])


def test_a_vocabulary_wider_than_one_kernel_block_and_no_bias():
    inputs = make(5, 16, 4099, ignored_every=2, with_bias=False)  # 4099 > MAX_BLOCK_V = 4096: two sweeps per row
    assert_all_close(loss_and_grads("triton", *inputs), loss_and_grads("reference", *inputs), 1e-5, 1e-5)


@pytest.mark.parametrize("backend", ["triton", "chunked"])
def test_fp16(backend):
    inputs = make(11, 32, 61, torch.float16, ignored_every=4)
    got = loss_and_grads(backend, *inputs, chunk_size=3)
    assert_all_close(got, loss_and_grads("reference", *inputs), *TOLERANCES[torch.float16])


def test_every_label_ignored_gives_nan_as_torch_does():
    x, weight, bias, labels = make(4, 8, 11)
    labels[:] = -100
    for backend in ("triton", "chunked", "reference"):
        loss = linear_cross_entropy(x, weight, bias, labels, backend=backend)
        assert torch.isnan(loss), backend
    loss = linear_cross_entropy(x, weight, bias, labels, backend="chunked")
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))  # no row has a target: nothing flows back


def test_without_autograd_only_the_loss_is_computed():
    inputs = make(9, 16, 37, ignored_every=3)
    with torch.no_grad():
        got = linear_cross_entropy(*inputs, backend="chunked")
        assert got.grad_fn is None
    torch.testing.assert_close(got, F.cross_entropy(F.linear(*inputs[:3]).float(), inputs[3]))


def test_default_chunk_takes_every_row_while_the_logits_fit_the_budget():
    assert default_chunk_size(42, 768, 30522) == 42  # the masked words of 8 rows: one matrix product, not 21 GEMVs
    assert default_chunk_size(1, 768, 30522) == 1
    fit = LOGITS_BUDGET_BYTES // (4 * 30522)  # 2199 rows of fp32 logits
    assert default_chunk_size(fit, 768, 30522) == fit
    assert default_chunk_size(fit + 1, 768, 30522) == 1104  # two equal chunks, rounded up to 16 rows
    assert default_chunk_size(10 * fit, 768, 30522) == 2208  # ten chunks of at most 2208 rows
    assert default_chunk_size(100_000, 64, 2**22) == MIN_CHUNK_ROWS  # a huge vocabulary: never below the floor


@pytest.mark.parametrize("rows", [1, 5, 600, 2000])
def test_the_default_chunks_cover_every_row_and_none_is_a_gemv(rows):
    vocab = 4 * LOGITS_BUDGET_BYTES // (4 * 300)  # a budget of 75 rows: the floor decides
    chunk = default_chunk_size(rows, 16, vocab)
    sizes = [min(chunk, rows - start) for start in range(0, rows, chunk)]
    assert sum(sizes) == rows and (len(sizes) == 1 or min(sizes[:-1]) >= MIN_CHUNK_ROWS)


def test_the_default_rule_over_several_chunks_equals_the_reference(monkeypatch):
    monkeypatch.setattr(cross_entropy, "LOGITS_BUDGET_BYTES", 4 * 97 * 5)  # 5 rows fit: 13 rows in chunks
    monkeypatch.setattr(cross_entropy, "MIN_CHUNK_ROWS", 4)
    assert default_chunk_size(13, 24, 97) == 16  # 3 chunks of 5 rows, rounded up to 16: one chunk after all
    monkeypatch.setattr(cross_entropy, "MIN_CHUNK_ROWS", 1)
    inputs = make(40, 24, 97, ignored_every=3)
    assert default_chunk_size(40, 24, 97) == 16  # 8 chunks of 5 rows, rounded up: three chunks of 16, 16 and 8
    got = loss_and_grads("chunked", *inputs)
    assert_all_close(got, loss_and_grads("reference", *inputs), *TOLERANCES[torch.float32])


@pytest.mark.parametrize("backend", ["triton", "chunked"])
def test_a_unit_upstream_gradient_hands_the_gradients_over_as_computed(backend):
    inputs = make(9, 16, 37, ignored_every=4)
    tensors = inputs[:3]
    got = torch.autograd.grad(linear_cross_entropy(*inputs, backend=backend), tensors)  # upstream 1: no rescaling
    want = torch.autograd.grad(linear_cross_entropy(*inputs, backend="reference"), tensors)
    assert_all_close(got, want, *TOLERANCES[torch.float32])
    loss = linear_cross_entropy(*inputs, backend=backend)
    first = torch.autograd.grad(loss, tensors, retain_graph=True)
    second = torch.autograd.grad(loss, tensors)  # a second backward sees the same, unmodified gradients
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("backend", ["triton", "chunked"])
def test_the_backward_allocates_no_vocabulary_wide_zeros(backend):
    """The op's gradient outputs are not differentiated: autograd must not fill a zero [V, H] gradient for them (it
    did, a 94 MB fill per step at BERT's vocabulary)."""
    from torch.profiler import ProfilerActivity, profile

    x, weight, bias, labels = make(9, 16, 37)
    loss = linear_cross_entropy(x, weight, bias, labels, backend=backend)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        loss.backward()
    fills = [e.name for e in prof.events() if e.name in ("aten::zeros", "aten::zero_", "aten::fill_")
             and e.input_shapes and list(e.input_shapes[0]) == [37, 16]]  # fmt: skip
    assert fills == []
    assert x.grad is not None and weight.grad is not None and bias.grad is not None


def test_fp64_in_and_out():
    inputs = [t.double() if t.is_floating_point() else t for t in make(7, 12, 31, ignored_every=2)]
    inputs = [t.detach().requires_grad_(True) if t.is_floating_point() else t for t in inputs]
    got = loss_and_grads("chunked", *inputs, chunk_size=3)
    want = loss_and_grads("reference", *inputs)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
        torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-6)  # the row step reads the logits in fp32


def test_auto_prefers_the_chunked_loop_over_materialising_on_cpu():
    assert CROSS_ENTROPY.select("auto", *make(3, 8, 11)).name == "chunked"


@pytest.mark.gpu
def test_gpu_bf16_bert_vocabulary():
    x, weight, bias, labels = make(512, 768, 30522, ignored_every=5)
    x, weight, bias = (t.detach().cuda().bfloat16().requires_grad_(True) for t in (x, weight, bias))
    labels = labels.cuda()
    got = loss_and_grads("triton", x, weight, bias, labels)
    want = loss_and_grads("reference", x, weight, bias, labels)
    torch.testing.assert_close(got[0], want[0], atol=1e-3, rtol=1e-3)
    for g, w in zip(got[1:], want[1:], strict=True):
        torch.testing.assert_close(g.float(), w.float(), atol=2e-3, rtol=3e-2)  # bf16 gradients: ~1 ulp


def test_chunk_logits_rows_start_on_16_element_boundaries():
    x, weight, bias, _ = make(5, 8, 97)
    for b in (bias, None):
        logits = cross_entropy.linear_padded(x.detach(), weight.detach(), None if b is None else b.detach())
        assert logits.shape == (5, 97) and logits.stride() == (112, 1)  # 97 rounded up to 112
        assert logits.data_ptr() % 64 == 0
        torch.testing.assert_close(logits, F.linear(x, weight, b), atol=0, rtol=0)


def test_the_row_kernel_uses_scratch_padding_only_when_told():
    from vlbert_fast.kernels.cross_entropy import _scratch_width, cross_entropy_rows

    g = torch.Generator().manual_seed(3)
    labels = torch.tensor([3, -100, 96, 0])
    wide = torch.randn(4, 112, generator=g)
    want_logits = wide[:, :97].clone()
    want_loss = cross_entropy.cross_entropy_rows_torch(want_logits, labels, -100)
    # told: the padding columns are read (as -inf) and zeroed; the V columns as without padding
    scratch = wide.clone()
    loss = cross_entropy_rows(scratch[:, :97], labels, -100, padding_is_scratch=True)
    torch.testing.assert_close(loss, want_loss, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(scratch[:, :97], want_logits, atol=1e-6, rtol=1e-6)
    assert not scratch[:, 97:].any()
    # not told: a caller's columns beyond the view are left alone
    kept = wide.clone()
    cross_entropy_rows(kept[:, :97], labels, -100)
    assert torch.equal(kept[:, 97:], wide[:, 97:])
    # no room for the padding (a contiguous [C, V] tensor, or a row stride not a multiple of 16): V only
    assert _scratch_width(torch.empty(4, 97)) == 97
    assert _scratch_width(torch.empty(4, 120)[:, :97]) == 97
    assert _scratch_width(torch.empty(4, 112)[:, :97]) == 112
    assert _scratch_width(torch.empty(4 * 112 - 15)[: 4 * 112 - 15].as_strided((4, 97), (112, 1))) == 97
