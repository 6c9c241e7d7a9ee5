"""Every public op is a torch.library custom op (ops/library.py): `torch.ops.vlbert_fast` lists each with its backward,
`torch.library.opcheck` passes for every backend a CPU reaches (schema, fake tensors, autograd registration, AOT
dispatch with dynamic shapes), and the custom op's forward and gradients equal the reference's autograd (the plain
function eager runs call). The Triton backends run under the interpreter (tests/conftest.py); `native` is the C++
extension on CPU tensors."""

from __future__ import annotations

import pytest
import torch

from vlbert_fast.ops import REGISTRY
from vlbert_fast.ops.embedding import _stacked, fused_embedding_reference
from vlbert_fast.ops.geometry import box_geometry_embedding_reference
from vlbert_fast.ops.layer_norm import bias_dropout_residual_layer_norm_reference
from vlbert_fast.ops.library import dropout_seed
from vlbert_fast.ops.roi_align import roi_align_reference

from .attention_inputs import packed_qkv
from .streams import random_visual, random_weights, token_stream

OPS = torch.ops.vlbert_fast


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(t.is_floating_point())


def _check(op, args: tuple, reference, ref_args: tuple, grad_slots: list[int], atol: float = 1e-5) -> None:
    """opcheck, then the op's first output and its gradients at `grad_slots` against the reference's autograd."""
    torch.library.opcheck(op, args)
    out = op(*args)
    out = out[0] if isinstance(out, tuple | list) else out
    want = reference(*ref_args)
    torch.testing.assert_close(out, want, atol=atol, rtol=1e-5)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=out.dtype)
    got = torch.autograd.grad(out, [args[i] for i in grad_slots], grad_out)
    expected = torch.autograd.grad(want, [ref_args[i] for i in grad_slots], grad_out)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=atol, rtol=1e-5)


def test_every_public_op_and_its_backward_is_registered():
    names = set(REGISTRY)
    assert names == {
        "bias_dropout_residual_layer_norm", "bias_gelu", "box_geometry_embedding", "fused_embedding",
        "linear_cross_entropy", "roi_align", "varlen_attention", "varlen_attention_packed",
    }  # fmt: skip
    for name in names:
        for op_name in (name, f"{name}_backward"):
            op = getattr(OPS, op_name)
            assert op.default._schema.name == f"vlbert_fast::{op_name}"
            assert torch._C._dispatch_has_kernel_for_dispatch_key(op.default.name(), "Meta")  # the fake impl
    assert torch._C._dispatch_has_kernel_for_dispatch_key("vlbert_fast::bias_gelu", "Autograd")


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_bias_gelu(backend):
    g = torch.Generator().manual_seed(0)
    x, bias = torch.randn(5, 37, generator=g).requires_grad_(), torch.randn(37, generator=g).requires_grad_()
    from vlbert_fast.ops import bias_gelu_reference

    _check(OPS.bias_gelu.default, (x, bias, backend), bias_gelu_reference, (_leaf(x), _leaf(bias)), [0, 1])


@pytest.mark.parametrize("backend", ["triton", "reference"])
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
@pytest.mark.parametrize("with_bias", [True, False])
def test_residual_layer_norm(backend, dropout_p, with_bias):
    g = torch.Generator().manual_seed(1)
    n, h = 7, 33
    x, residual = (torch.randn(n, h, generator=g).requires_grad_() for _ in range(2))
    weight, ln_bias = (torch.randn(h, generator=g).requires_grad_() for _ in range(2))
    bias = torch.randn(h, generator=g).requires_grad_() if with_bias else None
    seed = torch.tensor([987654321012], dtype=torch.int64) if dropout_p else None
    args = (x, bias, residual, weight, ln_bias, 1e-12, dropout_p, seed, 3, backend)
    ref_args = (_leaf(x), None if bias is None else _leaf(bias), _leaf(residual), _leaf(weight), _leaf(ln_bias),
                1e-12, dropout_p, seed, 3)  # fmt: skip
    slots = [0, 2, 3, 4] + ([1] if with_bias else [])
    _check(OPS.bias_dropout_residual_layer_norm.default, args, bias_dropout_residual_layer_norm_reference, ref_args,
           slots)  # fmt: skip


@pytest.mark.parametrize("backend", ["triton", "reference"])
@pytest.mark.parametrize("dropout_p", [0.0, 0.2])
def test_fused_embedding(backend, dropout_p):
    hidden = 24
    stream = token_stream([(3, 2), (2, 0)], pad=1)
    visual = random_visual(stream, hidden)
    weights = random_weights(hidden)
    stacked = [_leaf(t) for t in _stacked(weights)]
    seed = torch.tensor([2**40 + 5]) if dropout_p else None
    ids = [stream[k] for k in ("word_ids", "position_ids", "token_type_ids", "token_kind", "visual_index")]
    args = (*ids, stream["region_masked"], visual, *stacked, 1e-12, dropout_p, seed, 5, False, backend)

    def reference(visual, word, position, token_type, special, vis_w, vis_b, ln_w, ln_b):
        from vlbert_fast.ops.embedding import _unstacked

        w = _unstacked(word, position, token_type, special, vis_w, vis_b, ln_w, ln_b)
        return fused_embedding_reference(*ids, visual, stream["region_masked"], w, 1e-12, dropout_p,
                                         0 if seed is None else seed, 5)  # fmt: skip

    ref_args = (_leaf(visual), *(_leaf(t) for t in stacked))
    torch.library.opcheck(OPS.fused_embedding.default, args)
    out = OPS.fused_embedding(*args)
    want = reference(*ref_args)
    torch.testing.assert_close(out, want, atol=2e-5, rtol=1e-5)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    got = torch.autograd.grad(out, [visual, *stacked], grad_out)
    expected = torch.autograd.grad(want, list(ref_args), grad_out)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["triton", "reference"])
@pytest.mark.parametrize("dropout_p", [0.0, 0.25])
@pytest.mark.parametrize("packed", [False, True])
def test_varlen_attention(backend, dropout_p, packed):
    from vlbert_fast.ops import varlen_attention_reference

    q, k, v, cu, max_len, _ = packed_qkv([5, 1, 0, 9], heads=2, head_dim=8)
    seed = torch.tensor([77]) if dropout_p else None
    tail = (cu, max_len, dropout_p, None, seed, 4, "ieee", backend)
    ref_tail = (cu, max_len, dropout_p, None, seed, 4)
    if packed:
        qkv = torch.stack([q, k, v], 1).detach().requires_grad_()
        ref = _leaf(qkv)
        _check(OPS.varlen_attention_packed.default, (qkv, *tail),
               lambda t, *rest: varlen_attention_reference(*t.unbind(1), *rest), (ref, *ref_tail), [0])  # fmt: skip
    else:
        _check(OPS.varlen_attention.default, (q, k, v, *tail), varlen_attention_reference,
               (_leaf(q), _leaf(k), _leaf(v), *ref_tail), [0, 1, 2])  # fmt: skip


@pytest.mark.parametrize("backend", ["triton", "chunked", "reference"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_cross_entropy(backend, with_bias):
    from vlbert_fast.ops import linear_cross_entropy_reference

    g = torch.Generator().manual_seed(2)
    x, weight = torch.randn(9, 16, generator=g).requires_grad_(), torch.randn(41, 16, generator=g).requires_grad_()
    bias = torch.randn(41, generator=g).requires_grad_() if with_bias else None
    labels = torch.tensor([3, -100, 40, 0, 7, -100, 12, 1, 39])
    args = (x, weight, bias, labels, -100, 4, True, backend)  # chunks of 4 rows: three chunks
    ref_args = (_leaf(x), _leaf(weight), None if bias is None else _leaf(bias), labels, -100)
    _check(OPS.linear_cross_entropy.default, args, linear_cross_entropy_reference, ref_args,
           [0, 1] + ([2] if with_bias else []))  # fmt: skip


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_box_geometry_embedding(backend):
    g = torch.Generator().manual_seed(4)
    boxes = (torch.rand(6, 4, generator=g) * 50).requires_grad_()
    size = torch.tensor([[64.0, 48.0]]).requires_grad_()
    args = (boxes, size, 32, 1000.0, 100.0, backend)
    _check(OPS.box_geometry_embedding.default, args, box_geometry_embedding_reference,
           (_leaf(boxes), _leaf(size), 32, 1000.0, 100.0), [0, 1], atol=1e-4)  # fmt: skip
    out = torch.zeros(6, 40)
    OPS.box_geometry_embedding_out(boxes.detach(), size.detach(), 32, 1000.0, 100.0, backend, out[:, 8:])
    torch.testing.assert_close(out[:, 8:], box_geometry_embedding_reference(boxes, size, 32), atol=1e-4, rtol=1e-5)
    assert out[:, :8].abs().sum() == 0


@pytest.mark.parametrize("backend", ["native", "triton", "reference"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_roi_align(backend, channels_last):
    g = torch.Generator().manual_seed(5)
    features = torch.randn(2, 3, 9, 11, generator=g)
    if channels_last:
        features = features.contiguous(memory_format=torch.channels_last)
    features.requires_grad_()
    rois = torch.tensor([[0, 1.0, 2.0, 60.0, 40.0], [1, 10.0, 0.0, 170.0, 140.0], [1, -8.0, 3.0, 20.0, 30.0]])
    args = (features, rois, 3, 2, 1 / 16, 2, False, False, backend)
    ref_feat = features.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    _check(OPS.roi_align.default, args, roi_align_reference, (ref_feat, rois, (3, 2), 1 / 16, 2, False), [0])
    out = OPS.roi_align(*args)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_roi_align_is_twice_differentiable_through_the_op():
    features = torch.randn(1, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 3.0, 5.0, 70.0, 60.0], [0, 0.0, 0.0, 30.0, 90.0]], dtype=torch.float64)
    for backend in ("native", "reference"):
        # the reference's twice-differentiability is autograd's; the op's is the registered adjoint's
        def pooled(f, backend=backend):
            return OPS.roi_align(f, rois, 2, 2, 1 / 8, 2, True, False, backend)

        assert torch.autograd.gradgradcheck(pooled, (features,))


def test_dropout_keys_are_device_tensors_from_the_device_generator():
    torch.manual_seed(11)
    first = dropout_seed(None, 0.1, torch.device("cpu"))
    torch.manual_seed(11)
    assert torch.equal(dropout_seed(None, 0.1, torch.device("cpu")), first)  # torch.manual_seed governs it
    torch.manual_seed(11)
    assert int(first) == int(torch.randint(0, 2**62, ()))  # the draw a CPU run always made: CPU masks unchanged
    assert first.shape == (1,) and first.dtype == torch.int64
    assert dropout_seed(None, 0.0, torch.device("cpu")) is None
    assert int(dropout_seed(12345, 0.1, torch.device("cpu"))) == 12345
    with pytest.raises(ValueError, match=r"seed: expected a one-element int64 tensor, found torch.int32 \(1,\)"):
        dropout_seed(torch.tensor([1], dtype=torch.int32), 0.1, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"seed: expected an integer in \[0, 2\*\*63\)"):
        dropout_seed(-1, 0.1, torch.device("cpu"))


def test_a_launch_without_dropout_reads_one_cached_key_and_an_op_with_dropout_needs_one():
    from vlbert_fast.kernels.philox import seed_pointer

    cpu = torch.device("cpu")
    assert seed_pointer(None, cpu) is seed_pointer(None, cpu)  # nothing allocated or copied per launch
    key = torch.tensor([5])
    assert seed_pointer(key, cpu).data_ptr() == key.data_ptr()
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="a custom op with dropout needs its key"):
        OPS.bias_dropout_residual_layer_norm(x, None, x, x[0], x[0], 1e-12, 0.1, None, 0, "reference")
