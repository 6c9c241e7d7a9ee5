"""The step benchmark's inputs: batches of the pretraining mix within the row length, rotating batches of the same
layout, the Hugging Face peer fed the same tokens and regions, and its SDPA attention checked against eager."""

import dataclasses

import pytest
import torch

from benchmarks import bench_step, harness, hf_visualbert
from vlbert_fast.data.collate import collate
from vlbert_fast.vocabulary import IGNORE_INDEX, TokenKind


@pytest.fixture(scope="module")
def cfg():
    return bench_step.model_config("smoke")


@pytest.fixture(scope="module")
def batch(cfg):
    return collate(bench_step.batch_examples(cfg, 6, 20, seed=1))


def test_rows_are_the_pretraining_mix_within_the_row_length(cfg, batch):
    lengths = batch.seq_lens.tolist()
    assert max(lengths) <= 20 and batch.input_ids.shape[1] == 20
    assert lengths[3:] == [20, 20, 20]  # text-only rows fill the row
    assert batch.has_image.tolist() == [True] * 3 + [False] * 3
    batch.validate(cfg.vocab_size, cfg.max_position_embeddings, feature_dim=cfg.visual_feature_dim)


def test_a_rotated_batch_keeps_the_layout_and_changes_the_values(cfg, batch):
    other = bench_step.refill(batch, cfg, seed=5)
    for name in ("attention_mask", "token_kind", "visual_index", "region_masked", "region_predict", "position_ids"):
        assert torch.equal(getattr(other, name), getattr(batch, name))
    assert torch.equal(other.mlm_labels != IGNORE_INDEX, batch.mlm_labels != IGNORE_INDEX)
    assert not torch.equal(other.input_ids, batch.input_ids)
    assert not torch.equal(other.region_features, batch.region_features)
    other.validate(cfg.vocab_size, cfg.max_position_embeddings, feature_dim=cfg.visual_feature_dim)


def test_visualbert_gets_the_same_tokens_regions_and_labels(batch):
    feed = hf_visualbert.inputs(batch)
    text = (batch.token_kind == TokenKind.TEXT) | (batch.token_kind == TokenKind.TEXT_ONLY)
    t = int(text.sum(1).max())
    assert torch.equal(feed["input_ids"][feed["attention_mask"].bool()], batch.input_ids[text])
    assert torch.equal(feed["visual_embeds"][feed["visual_attention_mask"].bool()], batch.region_features)
    assert feed["visual_attention_mask"].sum(1).tolist() == torch.bincount(batch.region_sample, minlength=6).tolist()
    labels = feed["labels"]
    assert labels.shape == (6, t + feed["visual_embeds"].shape[1]) and (labels[:, t:] == IGNORE_INDEX).all()
    assert torch.equal(labels[:, :t][labels[:, :t] != IGNORE_INDEX], batch.mlm_labels[batch.mlm_labels != IGNORE_INDEX])
    real = int(batch.seq_lens.sum()) - 6  # VisualBERT has no [END]
    assert hf_visualbert.padding_share(feed) == pytest.approx(1 - real / labels.numel())


def test_sdpa_attention_is_checked_against_eager(cfg, batch, monkeypatch):
    feed = hf_visualbert.inputs(batch)
    model = hf_visualbert.build(cfg, "sdpa", torch.device("cpu"), feed)
    assert model(**feed).loss.isfinite()

    def wrong(self, hidden_states, attention_mask=None, *args, **kwargs):
        return (torch.zeros_like(hidden_states),)

    monkeypatch.setattr(hf_visualbert, "_sdpa_self_attention", wrong)
    with pytest.raises(harness.Unavailable, match="does not reproduce VisualBERT's eager output"):
        hf_visualbert.build(cfg, "sdpa", torch.device("cpu"), feed)


def test_visualbert_has_our_sizes(cfg):
    hf = hf_visualbert.config(dataclasses.replace(cfg, hidden_size=64, num_attention_heads=4))
    assert (hf.hidden_size, hf.num_hidden_layers, hf.vocab_size, hf.visual_embedding_dim) == (
        64, cfg.num_hidden_layers, cfg.vocab_size, cfg.visual_feature_dim
    )  # fmt: skip


def test_base_and_large_come_from_the_config_files():
    base, large = bench_step.model_config("base"), bench_step.model_config("large")
    assert (base.hidden_size, base.num_hidden_layers, base.visual_feature_dim) == (768, 12, 2048)
    assert (large.hidden_size, large.num_hidden_layers, large.num_attention_heads) == (1024, 24, 16)
    assert not base.check_inputs
