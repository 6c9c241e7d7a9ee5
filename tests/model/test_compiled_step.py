"""The packed training step under torch.compile(fullgraph=True) on a CPU: one graph, no breaks, through every custom op
of the packed path (fused embedding, varlen attention on the fused QKV, residual LayerNorms, bias-GELU, the fused
linear cross-entropy), forward and backward, equal to the same step run eagerly.

The step: the packed encoder (`VLBert.forward_packed`: embedding of the packed stream, the encoder), the MLM head's
transform and the fused cross-entropy on the masked rows, the RoI head and its soft cross-entropy on the predicted
regions. The rows are picked by index tensors made on the host, as a data pipeline would hand them over: the
pretraining wrapper's own selection (`VLBertForPretraining.forward_packed`) asks on the host whether each MLM group
has rows, to keep ZeRO-3's hook counts equal on every rank, and a host decision is a graph break by nature; the
boolean selection of the packed stream inside the encoder is traced with Dynamo's dynamic output shapes.

Backends: `aot_eager` (Dynamo and AOTAutograd, the ops run as they do eagerly), with dropout on: the dropout keys are
drawn on the device inside the graph (ops/library.py), by the same generator calls in the same order as eagerly, so
the masks and losses match. `inductor` (C++ code generation on this CPU) without dropout: Inductor replaces torch's
random ops with its own generator, so its masks are not eager's.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch
import torch._dynamo

from vlbert_fast.data import collate
from vlbert_fast.data.random import random_examples
from vlbert_fast.model import VLBertForPretraining
from vlbert_fast.model.heads import soft_cross_entropy
from vlbert_fast.ops import linear_cross_entropy

# fp32; the compiled graph runs the same ops in the same order (aot_eager) or fuses the elementwise ones around them
# (inductor): rounding differences of a few ulps, compounding over two layers and the heads
ATOL, RTOL = 1e-5, 1e-5


def packed_step(model: VLBertForPretraining, batch, masked_rows, labels, roi_rows, roi_targets) -> torch.Tensor:
    packed = model.vlbert(batch, packed_output=True)
    x_MH = model.mlm_head.transform(packed.hidden.index_select(0, masked_rows), fused=True)
    words_VH = model.vlbert.embeddings.word_embeddings.weight
    mlm = linear_cross_entropy(x_MH, words_VH, model.mlm_head.bias, labels, backend=model.cfg.kernels)
    roi_logits = model.roi_head(packed.hidden.index_select(0, roi_rows), fused=True)
    return mlm + soft_cross_entropy(roi_logits, roi_targets)


def step_inputs(model: VLBertForPretraining, batch) -> tuple:
    """The host-made row indices of the packed stream: masked words and their labels, predicted regions and their
    targets (what VLBertForPretraining.forward_packed selects with boolean masks)."""
    tokens = batch.attention_mask
    labels_N = model._mlm_labels(batch)[tokens]
    masked_rows = (labels_N != -100).nonzero()[:, 0]
    kind_N, region_N = batch.token_kind[tokens], batch.visual_index[tokens]
    roi_rows = model._predicted_roi_tokens(batch, kind_N, region_N).nonzero()[:, 0]
    roi_rows = roi_rows[torch.argsort(region_N[roi_rows])]
    return masked_rows, labels_N[masked_rows], roi_rows, batch.roi_targets[batch.region_predict]


def run(model, batch, inputs, step, seed: int = 0):
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        begin = time.perf_counter()
        loss = step(model, batch, *inputs)
        loss.backward()
        seconds = time.perf_counter() - begin
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, seconds


@pytest.mark.parametrize(
    "compile_backend, kernels, dropout",
    [("aot_eager", "reference", 0.1), ("aot_eager", "triton", 0.1), ("inductor", "reference", 0.0)],
)
def test_compiled_packed_step_equals_eager(tiny_cfg, compile_backend, kernels, dropout, record_property):
    cfg = dataclasses.replace(tiny_cfg, packed=True, check_inputs=False, kernels=kernels, attention=kernels,
                              visual_scale_text_init=0.3, visual_scale_object_init=0.3, hidden_dropout_prob=dropout,
                              attention_probs_dropout_prob=dropout)  # fmt: skip
    batch = collate(random_examples(cfg, 4, seed=6))
    batch.region_predict[batch.region_sample == batch.region_sample[-1]] = True  # a few predicted regions
    torch.manual_seed(0)
    model = VLBertForPretraining(cfg).train()
    inputs = step_inputs(model, batch)
    assert inputs[0].numel() and inputs[2].numel()
    want_loss, want_grads, _ = run(model, batch, inputs, packed_step)
    torch._dynamo.reset()
    compiled = torch.compile(packed_step, fullgraph=True, backend=compile_backend)
    loss, grads, seconds = run(model, batch, inputs, compiled)
    record_property("compile_and_first_step_s", round(seconds, 1))
    torch.testing.assert_close(loss, want_loss, atol=ATOL, rtol=RTOL)
    assert grads.keys() == want_grads.keys() and len(grads) > 20
    for name, g in want_grads.items():
        torch.testing.assert_close(grads[name], g, atol=ATOL, rtol=RTOL, msg=lambda m, n=name: f"{n}: {m}")
    if dropout:  # the keys are drawn in the graph, not frozen into it: another seed, other masks, another loss
        again, _, _ = run(model, batch, inputs, compiled, seed=1)
        eager_again, _, _ = run(model, batch, inputs, packed_step, seed=1)
        assert not torch.equal(again, loss)
        torch.testing.assert_close(again, eager_again, atol=ATOL, rtol=RTOL)


def test_the_philox_twin_compiles_bitwise_under_inductor():
    """Issue 21 saw Inductor's CPU code generation fail on `float ^ float`; our Philox draws are not the cause: the
    plain-PyTorch twin (int64 products and xors) compiles and draws bitwise what it draws eagerly, and in the model
    the draws sit inside opaque custom ops, which Inductor never generates code for."""
    from vlbert_fast.ops.dropout import philox_uniform_torch

    counters = torch.arange(3, 200, dtype=torch.int64)
    key = torch.tensor([2**40 + 12345])
    torch._dynamo.reset()
    compiled = torch.compile(philox_uniform_torch, fullgraph=True, backend="inductor")
    assert torch.equal(compiled(key, counters), philox_uniform_torch(key, counters))
