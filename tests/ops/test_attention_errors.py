"""Bad input to varlen_attention and the fused encoder ops raises an error that names the argument, what was
expected and what was found; a head dimension no backend supports lists every backend's reason."""

import re

import pytest
import torch

from vlbert_fast.ops import (
    BackendNotSupported,
    bias_dropout_residual_layer_norm,
    bias_gelu,
    linear_cross_entropy,
    varlen_attention,
)

from .attention_inputs import packed_qkv


@pytest.fixture(autouse=True)
def _debug_checks(monkeypatch):
    """The value checks (a host sync on a GPU) run only in debug mode (ops/library.py); these tests test them."""
    monkeypatch.setenv("VLBERT_FAST_DEBUG_CHECKS", "1")


@pytest.fixture
def qkv():
    q, k, v, cu, max_len, _ = packed_qkv([3, 5], heads=2, head_dim=8)
    return q.detach(), k.detach(), v.detach(), cu, max_len


@pytest.mark.parametrize(
    "cu, message",
    [
        ([1, 3, 8], r"cu_seqlens: must start at 0, found 1"),
        ([0, 5, 3, 8], r"cu_seqlens: must be non-decreasing, but entry 2 \(3\) is below entry 1 \(5\)"),
        ([0, 3, 7], r"cu_seqlens: last entry 7 must equal the token count of q, k and v \(8\)"),
        ([0, 3, 9], r"cu_seqlens: last entry 9 must equal the token count"),
    ],
)
def test_bad_cu_seqlens_values(qkv, cu, message):
    q, k, v, _, _ = qkv
    with pytest.raises(ValueError, match=message):
        varlen_attention(q, k, v, torch.tensor(cu, dtype=torch.int32), 8)


def test_bad_cu_seqlens_type_and_shape(qkv):
    q, k, v, cu, max_len = qkv
    with pytest.raises(TypeError, match=r"cu_seqlens: expected int32 \(as flash-attn takes it\), found torch.int64"):
        varlen_attention(q, k, v, cu.long(), max_len)
    with pytest.raises(ValueError, match=r"cu_seqlens: expected shape \[B\+1\]"):
        varlen_attention(q, k, v, cu[None], max_len)


def test_max_seqlen_below_the_longest_sequence(qkv):
    q, k, v, cu, _ = qkv
    with pytest.raises(ValueError, match=r"max_seqlen: 4 is below the longest sequence in cu_seqlens \(5\)"):
        varlen_attention(q, k, v, cu, 4)
    with pytest.raises(ValueError, match=r"max_seqlen: expected a non-negative int, found 5.0"):
        varlen_attention(q, k, v, cu, 5.0)


def test_a_head_dimension_no_backend_supports_lists_every_backend():
    q, k, v, cu, max_len, _ = packed_qkv([2, 1], heads=1, head_dim=264)
    with pytest.raises(BackendNotSupported) as info:
        varlen_attention(q.detach(), k.detach(), v.detach(), cu, max_len)
    text = str(info.value)
    assert text.startswith("varlen_attention: no backend can run these inputs:")
    assert re.search(r"flash_attn: flash-attn is not importable", text)
    assert "triton: q: head dimension 264 is above 128, the maximum of the Triton kernels" in text
    assert "sdpa: q: head dimension 264 is above 256, the maximum of the op" in text
    assert "reference: q: head dimension 264 is above 256, the maximum of the op" in text


def test_an_explicit_backend_says_why_it_cannot_run():
    q, k, v, cu, max_len, _ = packed_qkv([2, 1], heads=1, head_dim=160)
    with pytest.raises(BackendNotSupported, match=r"backend 'triton' cannot run these inputs: q: head dimension 160"):
        varlen_attention(q.detach(), k.detach(), v.detach(), cu, max_len, backend="triton")
    with pytest.raises(BackendNotSupported, match=r"unknown backend 'flash'; choose one of"):
        varlen_attention(q.detach(), k.detach(), v.detach(), cu, max_len, backend="flash")
    q64 = q.detach().double()
    with pytest.raises(BackendNotSupported, match=r"q: dtype torch.float64 is not supported"):
        varlen_attention(q64, q64, q64, cu, max_len, backend="triton")


def test_mismatched_dtypes_devices_and_shapes(qkv):
    q, k, v, cu, max_len = qkv
    with pytest.raises(TypeError, match=r"k: dtype torch.float16 differs from q's torch.float32"):
        varlen_attention(q, k.half(), v, cu, max_len)
    with pytest.raises(TypeError, match=r"v: dtype torch.float64 differs from q's torch.float32"):
        varlen_attention(q, k, v.double(), cu, max_len)
    with pytest.raises(ValueError, match=r"v: on meta, but q is on cpu; move them to one device"):
        varlen_attention(q, k, v.to("meta"), cu, max_len)
    with pytest.raises(ValueError, match=r"cu_seqlens: on meta, but q is on cpu"):
        varlen_attention(q, k, v, cu.to("meta"), max_len)
    with pytest.raises(ValueError, match=r"k: expected the shape of q \(8, 2, 8\), found \(8, 2, 4\)"):
        varlen_attention(q, k[..., :4], v, cu, max_len)
    with pytest.raises(ValueError, match=r"q: expected shape \[total_tokens, heads, head_dim\], found \(8, 16\)"):
        varlen_attention(q.flatten(1), k, v, cu, max_len)
    with pytest.raises(TypeError, match=r"q: expected a floating dtype, found torch.int64"):
        varlen_attention(q.long(), k.long(), v.long(), cu, max_len)


def test_bad_scalars(qkv):
    q, k, v, cu, max_len = qkv
    with pytest.raises(ValueError, match=r"dropout_p: expected a probability in \[0, 1\), found 1.0"):
        varlen_attention(q, k, v, cu, max_len, dropout_p=1.0)
    with pytest.raises(ValueError, match=r"softmax_scale: expected a positive finite number or None, found -1"):
        varlen_attention(q, k, v, cu, max_len, softmax_scale=-1)
    with pytest.raises(
        ValueError, match=r"seed: expected an integer in \[0, 2\*\*63\), a \[1\] int64 tensor or None, found -3"
    ):
        varlen_attention(q, k, v, cu, max_len, dropout_p=0.1, seed=-3)
    with pytest.raises(ValueError, match=r"offset: dropout counters offset \+ heads \* T \* max_seqlen"):
        varlen_attention(q, k, v, cu, max_len, dropout_p=0.1, offset=2**31 - 10)


def test_fused_encoder_ops_name_the_bad_argument():
    x, res = torch.randn(4, 8), torch.randn(4, 8)
    w, b = torch.ones(8), torch.zeros(8)
    with pytest.raises(ValueError, match=r"residual: expected the shape of x \(4, 8\), found \(4, 7\)"):
        bias_dropout_residual_layer_norm(x, b, res[:, :7], w, b)
    with pytest.raises(ValueError, match=r"bias: expected shape \[H\] = \(8,\), found \(9,\)"):
        bias_dropout_residual_layer_norm(x, torch.zeros(9), res, w, b)
    with pytest.raises(ValueError, match=r"weight: on meta, but x is on cpu"):
        bias_dropout_residual_layer_norm(x, b, res, w.to("meta"), b)
    with pytest.raises(ValueError, match=r"dropout_p: expected a probability in \[0, 1\), found -0.1"):
        bias_dropout_residual_layer_norm(x, b, res, w, b, dropout_p=-0.1)
    with pytest.raises(ValueError, match=r"bias: expected shape \[I\] = \(8,\), found \(4,\)"):
        bias_gelu(x, torch.zeros(4))
    with pytest.raises(TypeError, match=r"x: expected a floating dtype, found torch.int64"):
        bias_gelu(x.long(), b)
    labels = torch.tensor([1, -100, 2, 3])
    with pytest.raises(ValueError, match=r"labels: 11 at row 1 is outside \[0, 11\) and is not ignore_index"):
        linear_cross_entropy(x, torch.randn(11, 8), None, torch.tensor([1, 11, 2, 3]))
    with pytest.raises(ValueError, match=r"weight: expected shape \[V, H\] with H = 8, found \(11, 7\)"):
        linear_cross_entropy(x, torch.randn(11, 7), None, labels)
    with pytest.raises(TypeError, match=r"weight: dtype torch.float16 differs from x's torch.float32"):
        linear_cross_entropy(x, torch.randn(11, 8).half(), None, labels)
    with pytest.raises(ValueError, match=r"labels: expected an int64 tensor of shape \[M\] = \(4,\)"):
        linear_cross_entropy(x, torch.randn(11, 8), None, labels[:3])
