"""The reference model's behaviour: the visual path at initialisation, masking, losses, learning."""

import pytest
import torch

from vlbert_fast.data import IGNORE_INDEX, TokenKind, collate
from vlbert_fast.data.random import random_examples
from vlbert_fast.model import VLBertForPretraining


def test_image_adds_nothing_at_initialisation(tiny_cfg):
    """Zero visual gains: a text token embeds the same with any image or none (the whole hidden state differs,
    since RoI tokens join the attention)."""
    model = VLBertForPretraining(tiny_cfg).eval()
    ex = random_examples(tiny_cfg, 1, seed=4, text_only=0.0)[0]
    text_only = collate([type(ex)(input_ids=ex.input_ids)])
    with_image = collate([ex])
    emb = model.vlbert.embeddings
    with torch.no_grad():
        a = emb(text_only, model.vlbert.region_features(text_only))[0, : ex.num_text]
        b = emb(with_image, model.vlbert.region_features(with_image))[0, : ex.num_text]
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_image_changes_text_tokens_once_gains_move(tiny_cfg):
    model = VLBertForPretraining(tiny_cfg).eval()
    torch.nn.init.constant_(model.vlbert.embeddings.visual_ln_text.weight, 1.0)
    ex = random_examples(tiny_cfg, 1, seed=4, text_only=0.0)[0]
    other = random_examples(tiny_cfg, 1, seed=9, text_only=0.0)[0]
    swapped = type(ex)(**{**ex.__dict__, "region_features": other.region_features[:1].expand(ex.num_regions, -1)})
    with torch.no_grad():
        h1 = model.vlbert(collate([ex]))[0, : ex.num_text]
        h2 = model.vlbert(collate([swapped]))[0, : ex.num_text]
    assert (h1 - h2).abs().max() > 1e-3


def test_masked_region_appearance_is_hidden(tiny_cfg):
    """A masked region's appearance reaches no output (visual gains set to 1 so the image matters at all)."""
    model = VLBertForPretraining(tiny_cfg).eval()
    torch.nn.init.constant_(model.vlbert.embeddings.visual_ln_text.weight, 1.0)
    torch.nn.init.constant_(model.vlbert.embeddings.visual_ln_object.weight, 1.0)
    ex = random_examples(tiny_cfg, 1, seed=11, text_only=0.0, num_regions=(4, 4))[0]
    ex.region_masked = torch.tensor([False, False, True, False])
    altered = type(ex)(**ex.__dict__)
    altered.region_features = ex.region_features.clone()
    altered.region_features[2] += 5.0
    with torch.no_grad():
        h1 = model.vlbert(collate([ex]))
        h2 = model.vlbert(collate([altered]))
    torch.testing.assert_close(h1, h2, rtol=0, atol=0)
    altered.region_features[1] += 5.0  # an unmasked region's appearance does matter
    with torch.no_grad():
        h3 = model.vlbert(collate([altered]))
    assert (h1 - h3).abs().max() > 1e-4


def test_loss_parts_match_manual_computation(tiny_cfg):
    model = VLBertForPretraining(tiny_cfg).eval()
    batch = collate(random_examples(tiny_cfg, 8, seed=6))
    batch.region_predict[batch.region_sample == batch.region_sample[-1]] = True  # at least one predicted region
    with torch.no_grad():
        out = model(batch)
        hidden = model.vlbert(batch)
    labelled = batch.mlm_labels != IGNORE_INDEX
    logits = model.mlm_head(hidden[labelled], model.vlbert.embeddings.word_embeddings.weight)
    image_rows = (batch.token_kind == TokenKind.TEXT)[labelled]
    ce = torch.nn.functional.cross_entropy(logits, batch.mlm_labels[labelled], reduction="none")
    torch.testing.assert_close(out.losses["mlm_image"], ce[image_rows].mean())
    torch.testing.assert_close(out.losses["mlm_text"], ce[~image_rows].mean())
    # region k's token: find it by scanning the rows by hand
    rows = []
    for k in batch.region_predict.nonzero().flatten().tolist():
        pos = ((batch.visual_index == k) & (batch.token_kind == TokenKind.ROI)).nonzero()
        assert pos.shape[0] == 1
        rows.append(hidden[pos[0, 0], pos[0, 1]])
    roi_logits = model.roi_head(torch.stack(rows))
    soft_ce = -(batch.roi_targets[batch.region_predict] * torch.log_softmax(roi_logits, -1)).sum(-1).mean()
    torch.testing.assert_close(out.losses["roi"], soft_ce)
    torch.testing.assert_close(out.loss, ce[image_rows].mean() + ce[~image_rows].mean() + soft_ce)


def test_no_targets_gives_zero_loss_with_graph(tiny_cfg):
    model = VLBertForPretraining(tiny_cfg)
    examples = random_examples(tiny_cfg, 2, seed=1, text_only=0.0)
    for ex in examples:
        ex.mlm_labels = None
        ex.region_predict[:] = False
    out = model(collate(examples))
    assert out.loss.item() == 0.0 and out.losses == {}
    out.loss.backward()  # still differentiable, so a step on such a batch does not crash


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_tiny_model_fits_a_fixed_batch(tiny_cfg, dropout):
    tiny_cfg.hidden_dropout_prob = dropout
    torch.manual_seed(0)
    model = VLBertForPretraining(tiny_cfg)
    batch = collate(random_examples(tiny_cfg, 8, seed=3))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = model(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_every_parameter_gets_a_gradient(tiny_cfg):
    """The whole model is connected to the loss (text-only, image rows, masked and unmasked regions present)."""
    model = VLBertForPretraining(tiny_cfg)
    torch.nn.init.constant_(model.vlbert.embeddings.visual_ln_text.weight, 1.0)
    torch.nn.init.constant_(model.vlbert.embeddings.visual_ln_object.weight, 1.0)
    batch = collate(random_examples(tiny_cfg, 16, seed=8))
    batch.region_masked[1] = batch.region_predict[1] = True
    model(batch).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []
