"""The anchor: after the weight mapping, with zero visual gains, our embedding on text tokens, our encoder and our
MLM head equal a randomly initialised HF BertForPreTraining (fp32, max abs diff < 1e-5)."""

import torch

from vlbert_fast.data import TokenKind, collate
from vlbert_fast.data.random import random_examples
from vlbert_fast.model import VLBertForPretraining, load_hf_bert

from .helpers import random_hf_bert

ATOL = 1e-5  # the bound for fp32


def mapped_pair(cfg):
    hf = random_hf_bert(cfg)
    ours = VLBertForPretraining(cfg).eval()
    load_hf_bert(ours, hf.state_dict())
    return hf, ours


def test_embeddings_on_text_tokens_equal_hf(tiny_cfg):
    hf, ours = mapped_pair(tiny_cfg)
    examples = random_examples(tiny_cfg, 6, seed=1, text_only=0.5)
    for i, ex in enumerate(examples):  # sentence B on some rows, so both BERT token types are exercised
        split = ex.num_text // 2
        ex.token_type_ids = torch.cat([torch.zeros(split), torch.ones(ex.num_text - split)]).long() * (i % 2)
    batch = collate(examples)
    assert bool(batch.has_image.any()) and bool((~batch.has_image).any())
    with torch.no_grad():
        got = ours.vlbert.embeddings(batch, ours.vlbert.region_features(batch))
        want = hf.bert.embeddings(
            input_ids=batch.input_ids, token_type_ids=batch.token_type_ids.clamp(max=1), position_ids=batch.position_ids
        )
    text = (batch.token_kind == TokenKind.TEXT) | (batch.token_kind == TokenKind.TEXT_ONLY)
    assert int(text.sum()) > 50
    assert (got[text] - want[text]).abs().max().item() < ATOL


def test_encoder_equals_hf_on_same_hidden_states_and_mask(tiny_cfg):
    hf, ours = mapped_pair(tiny_cfg)
    torch.manual_seed(3)
    lengths = torch.tensor([13, 1, 7, 29])
    mask = torch.arange(29)[None, :] < lengths[:, None]
    x = torch.randn(4, 29, tiny_cfg.hidden_size)
    additive = (~mask)[:, None, None, :].float() * torch.finfo(torch.float32).min
    with torch.no_grad():
        got = ours.vlbert.encoder(x, mask)
        want = hf.bert.encoder(x, attention_mask=additive).last_hidden_state
    assert (got[mask] - want[mask]).abs().max().item() < ATOL
    assert (got - want).abs().max().item() < ATOL  # padded rows attend to the same valid keys in both


def test_mlm_head_equals_hf_prediction_head(tiny_cfg):
    hf, ours = mapped_pair(tiny_cfg)
    hidden = torch.randn(37, tiny_cfg.hidden_size)
    with torch.no_grad():
        got = ours.mlm_head(hidden, ours.vlbert.embeddings.word_embeddings.weight)
        want = hf.cls.predictions(hidden)
    assert got.shape == (37, tiny_cfg.vocab_size)
    assert (got - want).abs().max().item() < ATOL


def test_token_type_rows_copied_and_visual_row_kept(tiny_cfg):
    hf, ours = mapped_pair(tiny_cfg)
    table = ours.vlbert.embeddings.token_type_embeddings.weight
    torch.testing.assert_close(table[:2], hf.bert.embeddings.token_type_embeddings.weight, rtol=0, atol=0)
    assert table[2].abs().sum() > 0  # the visual type keeps its normal(0, 0.02) initialisation
