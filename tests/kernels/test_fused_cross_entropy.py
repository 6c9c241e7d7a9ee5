"""The chunked fused linear + cross-entropy (Triton row kernel, and the PyTorch chunked loop) equals the unfused
F.linear + F.cross_entropy: loss and every gradient, with and without ignored labels, chunk sizes that do and do not
divide the rows, vocabularies over one kernel block, fp16."""

import pytest
import torch
import torch.nn.functional as F

from vlbert_fast.ops import linear_cross_entropy
from vlbert_fast.ops.cross_entropy import CROSS_ENTROPY, default_chunk_size

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


def test_default_chunk_keeps_a_chunk_of_logits_near_the_size_of_x():
    assert default_chunk_size(2048, 768, 30522) == 64  # 2048 / ceil(30522 / 768) = 51.2 -> 64 rows
    assert default_chunk_size(3, 768, 30522) == 1
    assert default_chunk_size(100, 128, 100) == 128  # a vocabulary narrower than H: one chunk


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
