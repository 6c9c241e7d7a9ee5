"""fused_embedding_reference, the specification: the formula spelled out per token in fp64, precision, the Philox
dropout (known-answer vectors, mask semantics, keep rate), the model's use of it, and bad input."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from vlbert_fast.data import collate
from vlbert_fast.data.random import random_examples
from vlbert_fast.model import VLBertForPretraining
from vlbert_fast.ops import fused_embedding, fused_embedding_reference
from vlbert_fast.ops.embedding import dropout_counters, philox_4x32, philox_uniform
from vlbert_fast.vocabulary import TokenKind

from .streams import op_args, random_visual, random_weights, token_stream

SAMPLES = [(5, 3), (4, 0), (1, 7), (3, 0)]


def layer_norm_by_hand(v, gain, bias, eps):
    mean = v.mean()
    var = ((v - mean) ** 2).mean()
    return (v - mean) / math.sqrt(var + eps) * gain + bias


def by_hand(stream, visual, w, eps):
    """One token at a time, reading the README's rules (The model, exactly) directly."""
    out = []
    for n in range(stream["word_ids"].shape[0]):
        kind, r = TokenKind(int(stream["token_kind"][n])), int(stream["visual_index"][n])
        x = w.position[stream["position_ids"][n]] + w.token_type[stream["token_type_ids"][n]]
        if kind in (TokenKind.TEXT, TokenKind.TEXT_ONLY, TokenKind.PAD):
            x = x + w.word[stream["word_ids"][n]]
        if kind == TokenKind.TEXT:
            x = x + layer_norm_by_hand(visual[r], w.visual_ln_text_weight, w.visual_ln_text_bias, eps)
        if kind == TokenKind.TEXT_ONLY:
            x = x + w.text_visual
        if kind == TokenKind.ROI:
            x = x + (w.object_mask_word if stream["region_masked"][r] else w.object_word)
            x = x + layer_norm_by_hand(visual[r], w.visual_ln_object_weight, w.visual_ln_object_bias, eps)
        if kind == TokenKind.END:
            x = x + w.end
        out.append(layer_norm_by_hand(x, w.ln_weight, w.ln_bias, eps))
    return torch.stack(out)


@pytest.mark.parametrize("hidden", [1, 13, 32])
def test_matches_the_rules_token_by_token_fp64(hidden):
    stream = token_stream(SAMPLES, pad=2)
    w = random_weights(hidden, dtype=torch.float64, requires_grad=False)
    visual = random_visual(stream, hidden, dtype=torch.float64).detach()
    got = fused_embedding_reference(*op_args(stream, visual, w), eps=1e-5)
    assert got.dtype == torch.float64 and got.shape == (stream["word_ids"].shape[0], hidden)
    torch.testing.assert_close(got, by_hand(stream, visual, w, 1e-5), rtol=0, atol=1e-12)


def test_low_precision_is_computed_in_fp32_and_rounded_once():
    stream = token_stream(SAMPLES)
    w16 = random_weights(24, dtype=torch.float16, requires_grad=False)
    w32 = type(w16)(**{k: v.float() for k, v in w16.tensors().items()})
    visual = random_visual(stream, 24, dtype=torch.float16).detach()
    got = fused_embedding_reference(*op_args(stream, visual, w16))
    want = fused_embedding_reference(*op_args(stream, visual.float(), w32)).half()
    assert got.dtype == torch.float16
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_text_only_stream_without_regions():
    stream = token_stream([(4, 0), (1, 0)], pad=1)
    assert stream["region_masked"].shape == (0,)
    w = random_weights(8, dtype=torch.float64, requires_grad=False)
    visual = torch.zeros(0, 8, dtype=torch.float64)
    torch.testing.assert_close(
        fused_embedding_reference(*op_args(stream, visual, w)), by_hand(stream, visual, w, 1e-12), rtol=0, atol=1e-12
    )


def test_the_model_embeds_through_the_op(tiny_cfg):
    """VLBertEmbeddings passes the padded batch as one flat stream with its own parameters; a text-only token adds
    visual_ln_text(aux), i.e. what the op's TEXT_ONLY term adds when its `text_visual` row is that LayerNorm's
    output."""
    model = VLBertForPretraining(tiny_cfg).eval()
    emb = model.vlbert.embeddings
    torch.nn.init.normal_(emb.visual_ln_text.weight)
    torch.nn.init.normal_(emb.visual_ln_text.bias)
    batch = collate(random_examples(tiny_cfg, 4, seed=2))
    assert bool((batch.token_kind == TokenKind.TEXT_ONLY).any()) and bool((batch.token_kind == TokenKind.TEXT).any())
    with torch.no_grad():
        visual = model.vlbert.region_features(batch)
        got = emb(batch, visual)
        flat = [t.reshape(-1) for t in (batch.input_ids, batch.position_ids, batch.token_type_ids)]
        flat += [batch.token_kind.reshape(-1), batch.visual_index.reshape(-1)]
        ln_text = emb.visual_ln_text
        aux_visual = F.layer_norm(
            emb.text_visual_embedding, (tiny_cfg.hidden_size,), ln_text.weight, ln_text.bias, 1e-12
        )
        weights = dataclasses.replace(emb.weights(), text_visual=aux_visual)
        want = fused_embedding_reference(*flat, visual, batch.region_masked, weights, eps=tiny_cfg.layer_norm_eps)
    torch.testing.assert_close(got, want.view(got.shape), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# dropout


@pytest.mark.parametrize(
    "counter,key,want",
    [  # Random123's known-answer vectors for philox4x32-10
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
         (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ],
)  # fmt: skip
def test_philox_known_answers(counter, key, want):
    got = philox_4x32(tuple(torch.tensor([c]) for c in counter), key)
    assert tuple(int(x) for x in got) == want


def test_uniform_draws_fold_and_scale_as_tl_rand():
    # counter 0, seed 0: first word 0x6627e8d5 is positive as int32 -> times the scale
    assert philox_uniform(0, torch.tensor([0])).item() == pytest.approx(0x6627E8D5 * 4.6566127342e-10, rel=1e-7)
    draws = philox_uniform(1234, torch.arange(20000))
    assert float(draws.min()) >= 0.0 and float(draws.max()) < 1.0
    assert abs(float(draws.mean()) - 0.5) < 0.01  # 20000 uniforms: std of the mean 0.002
    assert philox_uniform(2**40 + 7, torch.arange(8)).ne(philox_uniform(7, torch.arange(8))).all()  # seed high word


def test_dropout_mask_semantics():
    stream = token_stream(SAMPLES, pad=3)
    w = random_weights(16, requires_grad=False)
    visual = random_visual(stream, 16).detach()
    args = op_args(stream, visual, w)
    plain = fused_embedding_reference(*args)
    a = fused_embedding_reference(*args, dropout_p=0.3, seed=5)
    assert torch.equal(a, fused_embedding_reference(*args, dropout_p=0.3, seed=5))  # same seed, same output
    assert not torch.equal(a != 0, fused_embedding_reference(*args, dropout_p=0.3, seed=6) != 0)
    keep = philox_uniform(5, dropout_counters(0, *plain.shape, plain.device)) >= 0.3
    assert torch.equal(a, torch.where(keep, plain * (1 / 0.7), 0.0))  # inverted dropout of the undropped output
    shifted = fused_embedding_reference(*args, dropout_p=0.3, seed=5, offset=16)  # offset of one row of H = 16
    assert torch.equal(shifted[:-1] != 0, a[1:] != 0)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_keep_rate(p):
    stream = token_stream([(60, 40)] * 3)
    w = random_weights(64, positions=128, requires_grad=False)
    out = fused_embedding_reference(*op_args(stream, random_visual(stream, 64).detach(), w), dropout_p=p, seed=11)
    n = out.numel()
    kept = float((out != 0).float().mean())
    assert abs(kept - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)  # 5 standard deviations


# ---------------------------------------------------------------------------------------------------------------------
# bad input


def _bad(name):
    stream = token_stream(SAMPLES)
    w = random_weights(8, requires_grad=False)
    visual = random_visual(stream, 8).detach()
    kwargs = {}
    if name == "position_ids":
        stream["position_ids"] = stream["position_ids"][:-1]
    elif name == "token_kind":
        stream["token_kind"] = stream["token_kind"].float()
    elif name == "visual":
        visual = visual[:, :5]
    elif name == "region_masked":
        stream["region_masked"] = stream["region_masked"].long()
    elif name == "weights.end":
        w = type(w)(**{**w.tensors(), "end": torch.zeros(9)})
    elif name == "dropout_p":
        kwargs["dropout_p"] = 1.0
    elif name == "offset":
        kwargs.update(dropout_p=0.1, offset=2**31 - 10)
    elif name == "seed":
        kwargs.update(dropout_p=0.1, seed=-1)
    return op_args(stream, visual, w), kwargs


@pytest.mark.parametrize(
    "name", ["position_ids", "token_kind", "visual", "region_masked", "weights.end", "dropout_p", "offset", "seed"]
)
def test_bad_input_names_the_argument(name):
    args, kwargs = _bad(name)
    with pytest.raises((ValueError, TypeError), match=name.replace(".", r"\.")):
        fused_embedding(*args, backend="reference", **kwargs)
