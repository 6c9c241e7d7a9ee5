"""The dropout draws (ops/dropout.py): the C++ generator and the Triton kernel (under TRITON_INTERPRET=1) give
bitwise the numbers of the plain-PyTorch twin, which tests/ops/test_embedding_reference.py holds to Random123's
known answers; `philox_uniform` picks the fast one and falls back to the twin; the references' masks are the twin's."""

import dataclasses

import pytest
import torch

from vlbert_fast import _ext
from vlbert_fast.data import collate
from vlbert_fast.data.random import random_examples
from vlbert_fast.model import VLBertForPretraining
from vlbert_fast.ops import dropout
from vlbert_fast.ops.dropout import dropout_counters, philox_uniform, philox_uniform_torch
from vlbert_fast.ops.embedding import philox_uniform as reexported
from vlbert_fast.ops.layer_norm import bias_dropout_residual_layer_norm_reference

SEEDS = [0, 1, 2**32 - 1, 2**32, 2**40 + 7, 2**63 - 1]  # both key words, their edges


def native():
    generator = dropout._native_generator()
    if generator is None:
        pytest.skip(f"vlbert_fast._C has no philox_uniform here: {_ext.describe()}")
    return generator


def counters_under_test(dtype=torch.int64):
    g = torch.Generator().manual_seed(3)
    edges = torch.tensor([0, 1, 2**31 - 2, 2**31 - 1, 2**16, 2**16 - 1])
    return torch.cat([edges, torch.randint(0, 2**31, (5003,), generator=g), torch.arange(1000)]).to(dtype)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_the_cpp_generator_is_the_twin_bit_for_bit(seed, dtype):
    counters = counters_under_test(dtype)
    got = native()(seed, counters)
    assert got.dtype == torch.float32 and got.shape == counters.shape
    assert torch.equal(got, philox_uniform_torch(seed, counters))


@pytest.mark.parametrize("shape", [(0,), (1,), (7, 13), (2, 3, 5)])
def test_the_cpp_generator_keeps_shapes_and_reads_strides(shape):
    counters = torch.arange(int(torch.tensor(shape).prod()) * 2).view(*shape[:-1], shape[-1] * 2)[..., ::2]
    assert torch.equal(native()(9, counters), philox_uniform_torch(9, counters))


def test_the_cpp_generator_does_not_depend_on_the_thread_count():
    counters = torch.arange(300_000)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native()(5, counters)
        torch.set_num_threads(2)
        two = native()(5, counters)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two) and torch.equal(one[-1000:], philox_uniform_torch(5, counters[-1000:]))


def test_the_cpp_generator_rejects_what_it_cannot_read():
    with pytest.raises(RuntimeError, match="int64 or int32"):
        native()(0, torch.zeros(3))


@pytest.mark.parametrize("seed", [0, 2**40 + 7])
def test_the_triton_generator_is_the_twin_bit_for_bit(seed):
    from vlbert_fast.kernels.philox import BLOCK, philox_uniform_triton

    counters = counters_under_test()[: 2 * BLOCK + 5]  # three programs, the last one masked
    assert torch.equal(philox_uniform_triton(seed, counters), philox_uniform_torch(seed, counters))
    assert philox_uniform_triton(seed, counters[:0]).shape == (0,)


def test_philox_uniform_uses_the_cpp_generator_and_falls_back_to_the_twin(monkeypatch):
    counters = dropout_counters(11, 4, 96, torch.device("cpu"))
    twin = philox_uniform_torch(77, counters)
    assert reexported is philox_uniform  # the old import path (ops/embedding.py) still works
    calls = []
    generator = native()
    monkeypatch.setattr(dropout, "_native_generator", lambda: lambda *a: calls.append(a) or generator(*a))
    assert torch.equal(philox_uniform(77, counters), twin) and len(calls) == 1
    monkeypatch.setattr(dropout, "_native_generator", lambda: None)  # an extension without the function
    assert torch.equal(philox_uniform(77, counters), twin)
    assert torch.equal(philox_uniform(77, counters.float()), twin)  # float counters: only the twin reads them
    with pytest.raises(ValueError, match="seed"):
        philox_uniform(-1, counters)


def test_the_twin_inside_a_compiled_function_gives_the_eager_draws():
    """Issue 21: traced by torch.compile, the twin's seed became a symbolic integer on the second seed and Inductor's
    C++ code generation failed on its int64 bit operations ("float ^ float"; the compile peer of the benchmarks and
    any compiled model without the C++ generator). It runs eagerly inside a compiled function instead."""
    counters = dropout_counters(3, 5, 32, torch.device("cpu"))
    compiled = torch.compile(lambda seed, c: philox_uniform_torch(seed, c) * 2.0, backend="inductor")
    for seed in (1234, 98765, 2**40 + 77):  # new seeds after the first: what made the seed symbolic
        assert torch.equal(compiled(seed, counters), 2.0 * philox_uniform_torch(seed, counters)), seed


def test_a_reference_mask_is_the_twins():
    g = torch.Generator().manual_seed(0)
    x, residual = torch.randn(6, 40, generator=g), torch.randn(6, 40, generator=g)
    weight, bias = torch.ones(40), torch.zeros(40)
    y = bias_dropout_residual_layer_norm_reference(x, None, residual, weight, bias, 1e-12, 0.4, 2**33 + 5, offset=7)
    keep = philox_uniform_torch(2**33 + 5, 7 + torch.arange(240).view(6, 40)) >= 0.4
    s = residual + torch.where(keep, x * (1.0 / (1.0 - 0.4)), 0.0)  # the reference scales by the inverse
    torch.testing.assert_close(y, torch.nn.functional.layer_norm(s, (40,), weight, bias, 1e-12), rtol=0, atol=0)


@pytest.mark.parametrize("packed", [True, False])
def test_the_model_trains_alike_on_the_cpp_draws_and_on_the_twin(tiny_cfg, packed, monkeypatch):
    """Dropout 0.1 everywhere: the same seed gives the same losses and every gradient, bit for bit, whether the CPU
    masks come from the C++ generator or from the plain-PyTorch twin."""
    native()
    cfg = dataclasses.replace(tiny_cfg, packed=packed, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                              visual_dropout=0.1)  # fmt: skip
    shape = dict(text_len=(3, 9), num_regions=(2, 6))
    batch = collate(random_examples(cfg, 3, seed=2, text_only=0.0, **shape) + random_examples(cfg, 2, text_only=1.0))

    def loss_and_grads(seed=0):
        torch.manual_seed(0)
        model = VLBertForPretraining(cfg)
        torch.nn.init.constant_(model.vlbert.embeddings.visual_ln_text.weight, 0.7)
        torch.manual_seed(seed)  # the seeds of the dropout masks
        out = model(batch)
        out.loss.backward()
        return out.loss, {name: p.grad for name, p in model.named_parameters()}

    fast_loss, fast_grads = loss_and_grads()
    monkeypatch.setattr(dropout, "_native_generator", lambda: None)
    twin_loss, twin_grads = loss_and_grads()
    assert torch.equal(fast_loss, twin_loss)
    assert all(torch.equal(fast_grads[name], grad) for name, grad in twin_grads.items())
    monkeypatch.undo()
    assert not torch.equal(loss_and_grads(seed=1)[0], fast_loss)  # dropout is on: another seed, other masks


@pytest.mark.gpu
def test_gpu_draws_are_the_twins_and_the_fused_kernels():
    """On a GPU the references draw with kernels/philox.py; the numbers are the twin's, hence the fused kernels'."""
    counters = counters_under_test().cuda()
    assert torch.equal(philox_uniform(2**40 + 7, counters).cpu(), philox_uniform_torch(2**40 + 7, counters.cpu()))
    x, residual = torch.randn(2, 50, 768, device="cuda").unbind(0)
    weight, bias = torch.ones(768, device="cuda"), torch.zeros(768, device="cuda")
    args = (x, None, residual, weight, bias, 1e-12, 0.1, 1234)
    ref = bias_dropout_residual_layer_norm_reference(*args)
    from vlbert_fast.ops import bias_dropout_residual_layer_norm

    fused = bias_dropout_residual_layer_norm(*args, backend="triton")
    torch.testing.assert_close(fused, ref, atol=2e-5, rtol=1e-5)  # the same mask: only rounding differs
