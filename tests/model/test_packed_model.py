"""The packed model equals the padded reference model (same weights, dropout off): hidden states, losses and every
parameter's gradient, on CPU backends and on the Triton kernels; activation checkpointing changes nothing, dropout
included; the config fields are validated."""

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from vlbert_fast.config import ModelConfig
from vlbert_fast.config.model import checkpointed_layers
from vlbert_fast.data import IGNORE_INDEX, collate
from vlbert_fast.data.random import random_examples
from vlbert_fast.model import VLBertForPretraining
from vlbert_fast.model.flops import forward_flops

# fp32 throughout; the packed path sums in another order (bias added apart from the matmul, attention per sequence,
# the MLM loss in chunks): a few 1e-7 relative per op, compounding over two layers and the heads.
ATOL, RTOL = 2e-5, 1e-5


@pytest.fixture
def cfg(tiny_cfg):
    """The padded reference. Non-zero visual gains, so that region features and RoI tokens matter to every output
    and gradient."""
    return dataclasses.replace(tiny_cfg, visual_scale_text_init=0.3, visual_scale_object_init=0.3, packed=False)


@pytest.fixture
def batch(cfg):
    b = collate(random_examples(cfg, 6, seed=6))
    b.region_predict[b.region_sample == b.region_sample[-1]] = True  # at least a few predicted regions
    assert bool((b.seq_lens < b.input_ids.shape[1]).any())  # padding exists, so packing matters
    return b


def run(cfg, batch, train=True, seed=0):
    torch.manual_seed(seed)
    model = VLBertForPretraining(cfg).train(train)
    out = model(batch)
    out.loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    return model, out, grads


def assert_same(got, want):
    (_, out_g, grads_g), (_, out_w, grads_w) = got, want
    assert out_g.losses.keys() == out_w.losses.keys() == {"mlm_image", "mlm_text", "roi"}
    for name in out_w.losses:
        torch.testing.assert_close(out_g.losses[name], out_w.losses[name], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(out_g.roi_logits, out_w.roi_logits, atol=ATOL, rtol=RTOL)
    assert torch.equal(out_g.mlm_labels, out_w.mlm_labels) and torch.equal(out_g.mlm_has_image, out_w.mlm_has_image)
    unused = [n for n, g in grads_w.items() if g is None]
    assert unused == [n for n, g in grads_g.items() if g is None] == []
    for name, g in grads_w.items():
        torch.testing.assert_close(grads_g[name], g, atol=ATOL, rtol=RTOL, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("attention", ["auto", "reference"])
def test_packed_equals_padded_reference(cfg, batch, attention):
    assert_same(run(dataclasses.replace(cfg, packed=True, attention=attention), batch), run(cfg, batch))


def test_packed_on_the_triton_kernels_equals_padded_reference(cfg):
    """Every fused op on its Triton kernel (interpreted): attention, LayerNorms, GELUs, the chunked MLM loss."""
    small = dataclasses.replace(cfg, num_hidden_layers=1)
    batch = collate(random_examples(small, 3, seed=2))
    batch.region_predict[batch.region_sample == 0] = True
    packed = dataclasses.replace(small, packed=True, attention="triton", kernels="triton")
    assert_same(run(packed, batch), run(small, batch))


def test_hidden_states_equal_at_the_tokens_and_zero_at_the_padding(cfg, batch):
    torch.manual_seed(0)
    reference = VLBertForPretraining(cfg).eval()
    packed = VLBertForPretraining(dataclasses.replace(cfg, packed=True)).eval()
    packed.load_state_dict(reference.state_dict())  # the same parameter names in both modes
    with torch.no_grad():
        want, got = reference.vlbert(batch), packed.vlbert(batch)
        packed_out, reference_out = packed(batch), reference(batch)
    mask = batch.attention_mask
    torch.testing.assert_close(got[mask], want[mask], atol=ATOL, rtol=RTOL)
    assert torch.equal(got[~mask], torch.zeros_like(got[~mask]))
    # eval mode fills the MLM logits (the evaluation reads them); in training the fused loss never makes them
    torch.testing.assert_close(packed_out.mlm_logits, reference_out.mlm_logits, atol=ATOL, rtol=RTOL)


def test_an_empty_mlm_group_changes_the_report_not_the_heads_outputs(cfg, batch):
    """Text-only rows without a masked word: the MLM head still returns a loss for every group (ZeRO-3 counts the
    head's output tensors when it traces the backward; a rank returning fewer leaves the others waiting in a
    collective, tests/distributed/test_zero_stages.py). The empty group's exact 0 joins the total loss, not the report,
    and the packed model still equals the padded reference."""
    batch.mlm_labels[~batch.has_image] = IGNORE_INDEX
    packed = dataclasses.replace(cfg, packed=True)
    model, out, _ = run(packed, batch)
    assert out.losses.keys() == {"mlm_image", "roi"}
    hidden = torch.randn(3, cfg.hidden_size, requires_grad=True)
    labels = torch.tensor([4, 5, 6])
    groups = {"mlm_image": torch.tensor([True, True, True]), "mlm_text": torch.tensor([False, False, False])}
    heads = model.mlm_head(hidden, model.vlbert.embeddings.word_embeddings.weight, labels, groups)
    assert heads.losses.keys() == groups.keys()
    assert heads.losses["mlm_text"].item() == 0.0 and heads.losses["mlm_text"].requires_grad
    reference = run(cfg, batch)
    assert reference[1].losses.keys() == out.losses.keys()
    for name in out.losses:
        torch.testing.assert_close(out.losses[name], reference[1].losses[name], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(out.loss, reference[1].loss, atol=ATOL, rtol=RTOL)


def test_training_never_materialises_the_mlm_logits(cfg, batch):
    _, out, _ = run(dataclasses.replace(cfg, packed=True), batch)
    assert out.mlm_logits is None and out.mlm_labels.numel() > 0


@pytest.mark.parametrize("packed", [False, True])
def test_activation_checkpointing_changes_nothing_even_with_dropout(cfg, batch, packed):
    """Recomputed layers draw the same dropout masks (the RNG state is restored), so loss and gradients match
    bitwise-close; a different seed gives different ones (dropout is on)."""
    noisy = dataclasses.replace(cfg, packed=packed, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    plain = run(noisy, batch, seed=3)
    checkpointed = run(dataclasses.replace(noisy, activation_checkpointing="all"), batch, seed=3)
    torch.testing.assert_close(checkpointed[1].loss, plain[1].loss, atol=1e-6, rtol=1e-6)
    for name, g in plain[2].items():
        torch.testing.assert_close(checkpointed[2][name], g, atol=1e-6, rtol=1e-6, msg=name)
    assert not torch.equal(run(noisy, batch, seed=4)[1].loss, plain[1].loss)


def test_checkpointing_spec_and_defaults():
    assert ModelConfig().packed and ModelConfig().attention == "auto"
    assert checkpointed_layers("none", 4) == frozenset()
    assert checkpointed_layers("all", 3) == {0, 1, 2}
    assert checkpointed_layers("every:2", 5) == {0, 2, 4}
    assert checkpointed_layers("0,3", 4) == {0, 3}
    with pytest.raises(ValueError, match=r"activation_checkpointing: layers \[4\] are outside \[0, 4\)"):
        checkpointed_layers("1,4", 4)
    with pytest.raises(ValueError, match=r"activation_checkpointing must be 'none', 'all', 'every:K'"):
        ModelConfig(activation_checkpointing="some")
    with pytest.raises(ValueError, match=r"attention must be one of auto, flash_attn, triton, sdpa, reference"):
        ModelConfig(attention="flash")


def test_packed_model_does_exactly_the_counted_work(cfg, batch):
    """With unequal lengths the padded model computes on padding; the packed one does what model/flops.py counts
    (attention on the reference backend, whose per-sequence matmuls FlopCounterMode sees)."""
    packed = dataclasses.replace(cfg, packed=True, attention="reference")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        VLBertForPretraining(packed).eval()(batch)
    masked = int((batch.mlm_labels != -100).sum())
    parts = forward_flops(packed, batch.seq_lens.tolist(), batch.num_regions, masked, int(batch.region_predict.sum()))
    assert counter.get_total_flops() == sum(parts.values())
