"""The encoder layer's fused QKV projection gets exactly one gradient: attention takes the [N, 3, heads, D] projection
whole (ops.varlen_attention_packed), so its backward holds no select_backward and no full-size sum of per-part
gradients, on every backend that runs here. Two independent checks: the autograd graph (the projection's node has a
single consumer, so the engine never adds into it; no SelectBackward node anywhere) and the profiler (no
aten::select_backward, no aten::add of the projection's size in the backward). Each check is first shown to catch
the three-view spelling it replaced."""

import dataclasses

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from vlbert_fast.model.encoder import EncoderLayer
from vlbert_fast.ops import varlen_attention

from ..ops.attention_inputs import cu_seqlens_of

LENGTHS = [7, 12, 1, 9]


@pytest.fixture
def layer_and_input(tiny_cfg):
    cfg = dataclasses.replace(tiny_cfg, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    torch.manual_seed(0)
    layer = EncoderLayer(cfg).train()
    x = torch.randn(sum(LENGTHS), cfg.hidden_size, requires_grad=True)
    return layer, x


def three_views(self, x_NH, cu_seqlens, max_seqlen):
    """The replaced spelling: q, k, v as three select views of the projection."""
    n = x_NH.shape[0]
    qkv = self.qkv(x_NH).view(n, 3, self.num_heads, self.head_dim)
    context = varlen_attention(qkv[:, 0], qkv[:, 1], qkv[:, 2], cu_seqlens, max_seqlen, backend=self.backend)
    return torch.nn.functional.linear(context.reshape(n, -1), self.out.weight)


def graph_of(layer, x, backend, monkeypatch, spelling=None):
    """(the layer's output, the QKV projection's output) with the attention backend forced."""
    monkeypatch.setattr(layer.attention, "backend", backend)
    if spelling is not None:
        monkeypatch.setattr(type(layer.attention), "forward_packed", spelling)
    captured = {}
    handle = layer.attention.qkv.register_forward_hook(lambda m, i, out: captured.setdefault("qkv", out))
    out = layer(x, cu_seqlens=cu_seqlens_of(LENGTHS), max_seqlen=max(LENGTHS))
    handle.remove()
    return out, captured["qkv"]


def consumers_and_names(root: torch.autograd.graph.Node, projection: torch.autograd.graph.Node) -> tuple[int, set[str]]:
    """How many graph edges lead to the projection's output as attention sees it (the [N, 3, heads, D] view of the
    Linear's output: the projection node's one parent), and the names of all nodes reachable from `root`."""
    seen, stack, parents, names = set(), [root], {}, set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(node.name())
        for child, _ in node.next_functions:
            parents.setdefault(child, []).append(node)
            stack.append(child)
    (view,) = set(parents[projection])  # the Linear's output is used once: viewed as [N, 3, heads, D]
    assert view.name() == "ViewBackward0"
    return len(parents[view]), names


def backward_ops(out: torch.Tensor) -> list[tuple[str, list]]:
    """(op name, input shapes) of every aten op the backward runs."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        out.sum().backward()
    return [(e.name, e.input_shapes) for e in prof.events()]


def full_size_adds(ops, qkv_numel: int) -> list:
    return [(name, shapes) for name, shapes in ops if name in ("aten::add", "aten::add_") and shapes
            and any(s and torch.Size(s).numel() == qkv_numel for s in shapes)]  # fmt: skip


def test_the_checks_catch_the_three_view_spelling(layer_and_input, monkeypatch):
    layer, x = layer_and_input
    out, qkv = graph_of(layer, x, "sdpa", monkeypatch, spelling=three_views)
    edges, names = consumers_and_names(out.grad_fn, qkv.grad_fn)
    assert edges == 3 and "SelectBackward0" in names
    ops = backward_ops(out)
    assert sum(name == "aten::select_backward" for name, _ in ops) == 3
    assert len(full_size_adds(ops, qkv.numel())) >= 2  # the engine sums three [N, 3H] gradients


@pytest.mark.parametrize("backend", ["sdpa", "reference", "triton"])
def test_packed_attention_gives_the_projection_one_gradient(layer_and_input, monkeypatch, backend):
    layer, x = layer_and_input
    out, qkv = graph_of(layer, x, backend, monkeypatch)
    edges, names = consumers_and_names(out.grad_fn, qkv.grad_fn)
    assert edges == 1, f"{backend}: the QKV projection has {edges} consumers; the engine would sum their gradients"
    assert not {n for n in names if n.startswith("SelectBackward")}, names
    ops = backward_ops(out)
    assert not [name for name, _ in ops if name == "aten::select_backward"]
    assert full_size_adds(ops, qkv.numel()) == []
    assert x.grad is not None and torch.isfinite(x.grad).all()
