"""Text-only rows embed as the original's (pretrain/modules/resnet_vlbert_for_pretraining_multitask.py with
common/visual_linguistic_bert.py): word pieces with no [CLS]/[SEP], each adding visual_ln_text(aux) with a learned
aux ~ N(0, 0.02), then [END] (type 2, position text length + 1); written here from those formulas and compared on
the reference and the Triton backend (forward and the gradients of aux and visual_ln_text)."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from vlbert_fast.data import Example, collate
from vlbert_fast.model import VLBertForPretraining
from vlbert_fast.vocabulary import TokenKind


def original_text_only_embedding(emb, ids: torch.Tensor, eps: float) -> torch.Tensor:
    """[n + 1, H]: the original's embedding of a text-only row `ids` (n word pieces) and its [END]."""
    h = emb.word_embeddings.weight.shape[1]
    n = ids.shape[0]
    visual = F.layer_norm(emb.text_visual_embedding, (h,), emb.visual_ln_text.weight, emb.visual_ln_text.bias, 1e-12)
    text = emb.word_embeddings.weight[ids] + visual  # text_vl_embeddings = word + visual_ln_text(aux)
    text = text + emb.position_embeddings.weight[:n] + emb.token_type_embeddings.weight[0]
    # [END]: at grid position n, position id text_end + 1 (obj_pos_id_relative), token type 2
    end = emb.end_embedding + emb.position_embeddings.weight[n + 1] + emb.token_type_embeddings.weight[2]
    x = torch.cat([text, end[None]])
    return F.layer_norm(x, (h,), emb.layer_norm.weight, emb.layer_norm.bias, eps)


def randomised(model: VLBertForPretraining) -> VLBertForPretraining:
    emb = model.vlbert.embeddings
    with torch.no_grad():
        for p in (emb.visual_ln_text.weight, emb.visual_ln_text.bias, emb.layer_norm.bias):
            p.normal_()
    return model


def test_aux_starts_normal_002_and_the_zero_gain_keeps_bert(tiny_cfg):
    torch.manual_seed(0)
    big = dataclasses.replace(tiny_cfg, hidden_size=1024, num_attention_heads=4)
    aux = VLBertForPretraining(big).vlbert.embeddings.text_visual_embedding
    assert abs(aux.mean().item()) < 0.005 and aux.std().item() == pytest.approx(0.02, rel=0.1)
    # With the original's zero gain the visual term is the LayerNorm's bias, 0: text-only rows start as BERT's.
    model = VLBertForPretraining(tiny_cfg).eval()
    ids = torch.tensor([5, 9, 17])
    batch = collate([Example(input_ids=ids)])
    emb = model.vlbert.embeddings
    got = emb(batch, torch.zeros(0, tiny_cfg.hidden_size))[0]
    words = emb.word_embeddings.weight[ids] + emb.position_embeddings.weight[:3] + emb.token_type_embeddings.weight[0]
    want = F.layer_norm(words, (tiny_cfg.hidden_size,), emb.layer_norm.weight, emb.layer_norm.bias, 1e-12)
    torch.testing.assert_close(got[:3], want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("packed", [False, True])
def test_text_only_rows_match_the_original(tiny_cfg, backend, packed):
    cfg = dataclasses.replace(tiny_cfg, kernels=backend, packed=packed)
    torch.manual_seed(1)
    model = randomised(VLBertForPretraining(cfg)).eval()
    emb = model.vlbert.embeddings
    text_only = Example(input_ids=torch.tensor([7, 3, 11, 40, 2]))
    with_image = Example(
        input_ids=torch.tensor([2, 8, 9, 3]),
        boxes=torch.tensor([[0.0, 0.0, 31.0, 23.0], [2.0, 3.0, 10.0, 12.0]]),
        image_size=(32.0, 24.0),
        region_features=torch.rand(2, cfg.visual_feature_dim),
    )
    batch = collate([with_image, text_only])
    assert batch.token_kind[1, :5].tolist() == [TokenKind.TEXT_ONLY] * 5 and batch.token_kind[1, 5] == TokenKind.END
    visual = model.vlbert.region_features(batch)
    tokens = batch.attention_mask if packed else None
    out = emb(batch, visual, tokens_BL=tokens)
    got = out[with_image.length :] if packed else out[1, : text_only.length]
    want = original_text_only_embedding(emb, text_only.input_ids, cfg.layer_norm_eps)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)
    # the gradients of aux and of visual_ln_text agree with the formula's
    grad_out = torch.randn_like(got)
    params = [emb.text_visual_embedding, emb.visual_ln_text.weight, emb.visual_ln_text.bias]
    got_grads = torch.autograd.grad(got, params, grad_out, retain_graph=True)
    want_grads = torch.autograd.grad(want, params, grad_out)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_a_batch_of_text_only_rows_alone(tiny_cfg):
    """No region at all in the batch: the aux row is the only visual row."""
    model = randomised(VLBertForPretraining(tiny_cfg)).eval()
    rows = [Example(input_ids=torch.tensor([4, 5, 6])), Example(input_ids=torch.tensor([30, 31]))]
    batch = collate(rows)
    out = model.vlbert.embeddings(batch, model.vlbert.region_features(batch))
    for i, row in enumerate(rows):
        want = original_text_only_embedding(model.vlbert.embeddings, row.input_ids, tiny_cfg.layer_norm_eps)
        torch.testing.assert_close(out[i, : row.length], want, rtol=0, atol=2e-6)
