"""The Hugging Face peer of the precomputed training step: `transformers.VisualBertForPreTraining` at our model's
sizes, fed the same batch.

VisualBERT takes text and regions as two padded blocks: `input_ids` [B, T] (T the longest text) and `visual_embeds`
[B, R, Dv] (R the most regions of a sample; text-only rows get none), each with its own attention mask, the text
with token types 0/1 and the regions with visual token type 1. It projects the 2048-d appearance to H (no box
geometry) and runs the same post-LN BERT encoder. Its MLM head scores every position of the [B, T + R] sequence
and its loss is the cross-entropy over the labelled ones: labels carry our masked words at their text positions,
-100 elsewhere. That is how the library is used for pretraining; it is the work a user of it pays for.

Attention: `eager` is the library's own. transformers 5.x has no SDPA path for VisualBERT (asking for
`attn_implementation="sdpa"` raises), so `sdpa` replaces each layer's self-attention forward by one that calls
`torch.nn.functional.scaled_dot_product_attention` on the same projections and mask, after checking on the
model's own inputs that it gives the eager output.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

from vlbert_fast.config import ModelConfig
from vlbert_fast.data.batch import Batch
from vlbert_fast.vocabulary import IGNORE_INDEX, TokenKind

from .harness import Unavailable


def config(cfg: ModelConfig):
    from transformers import VisualBertConfig

    return VisualBertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size,
        hidden_act="gelu",
        hidden_dropout_prob=cfg.hidden_dropout_prob,
        attention_probs_dropout_prob=cfg.attention_probs_dropout_prob,
        max_position_embeddings=cfg.max_position_embeddings,
        type_vocab_size=2,
        layer_norm_eps=cfg.layer_norm_eps,
        initializer_range=cfg.initializer_range,
        visual_embedding_dim=cfg.visual_feature_dim,
    )


def inputs(batch: Batch, feature_dim: int | None = None) -> dict[str, torch.Tensor]:
    """VisualBERT's keyword arguments for our batch (module docstring); tensors on the batch's device.
    `feature_dim` sizes the (all padding) visual block of a batch without region features."""
    kind = batch.token_kind
    text_BL = (kind == TokenKind.TEXT) | (kind == TokenKind.TEXT_ONLY)  # a prefix of every row
    text_len = text_BL.sum(1)
    b, t = batch.num_samples, int(text_len.max())
    input_ids = batch.input_ids[:, :t] * text_BL[:, :t]
    text_mask = text_BL[:, :t]
    k = batch.num_regions
    counts = torch.bincount(batch.region_sample, minlength=b)
    r = max(int(counts.max()) if k else 0, 1)  # one masked-out slot where no sample has regions
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(k, device=counts.device) - starts[batch.region_sample]
    if batch.region_features is None and k:
        raise ValueError("batch has regions but no region_features: VisualBERT takes precomputed features")
    dv = batch.region_features.shape[1] if batch.region_features is not None else (feature_dim or 1)
    features = batch.region_features if batch.region_features is not None else batch.boxes.new_zeros(0, dv)
    visual = features.new_zeros(b, r, dv)
    visual[batch.region_sample, slot] = features
    visual_mask = torch.zeros(b, r, dtype=torch.long, device=counts.device)
    visual_mask[batch.region_sample, slot] = 1
    labels = torch.full((b, t + r), IGNORE_INDEX, dtype=torch.long, device=counts.device)
    if batch.mlm_labels is not None:
        labels[:, :t] = torch.where(text_mask, batch.mlm_labels[:, :t], IGNORE_INDEX)
    return {
        "input_ids": input_ids,
        "attention_mask": text_mask.long(),
        "token_type_ids": batch.token_type_ids[:, :t] * text_mask,
        "visual_embeds": visual,
        "visual_attention_mask": visual_mask,
        "visual_token_type_ids": torch.ones(b, r, dtype=torch.long, device=counts.device),
        "labels": labels,
    }


def padding_share(hf_inputs: dict[str, torch.Tensor]) -> float:
    """Share of VisualBERT's [B, T + R] positions that are padding."""
    real = int(hf_inputs["attention_mask"].sum() + hf_inputs["visual_attention_mask"].sum())
    total = hf_inputs["labels"].numel()
    return 1.0 - real / total


def _sdpa_self_attention(self, hidden_states, attention_mask=None, *args, **kwargs):
    """VisualBertSelfAttention.forward with the attention through SDPA (same projections, mask and dropout)."""
    b, length, _ = hidden_states.shape
    shape = (b, length, self.num_attention_heads, self.attention_head_size)
    q, k, v = (proj(hidden_states).view(shape).transpose(1, 2) for proj in (self.query, self.key, self.value))
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.to(q.dtype)
    context = F.scaled_dot_product_attention(
        q, k, v, attn_mask=attention_mask, dropout_p=self.dropout.p if self.training else 0.0
    )
    return (context.transpose(1, 2).reshape(b, length, self.all_head_size),)


def _use_sdpa(model) -> int:
    patched = 0
    for module in model.modules():
        if type(module).__name__ == "VisualBertSelfAttention":
            module.forward = types.MethodType(_sdpa_self_attention, module)
            patched += 1
    return patched


def build(cfg: ModelConfig, attention: str, device: torch.device, sample: dict[str, torch.Tensor]):
    """VisualBertForPreTraining on `device` in fp32, with `attention` "eager" or "sdpa" (checked against eager on
    the first two rows of `sample`, the model's own inputs)."""
    try:
        from transformers import VisualBertForPreTraining
    except Exception as exc:  # transformers missing or broken (torchvision on a CPU machine breaks it, say)
        raise Unavailable(f"transformers' VisualBertForPreTraining cannot be imported: {exc}") from exc
    torch.manual_seed(0)
    model = VisualBertForPreTraining(config(cfg)).to(device)
    if attention == "eager":
        return model
    if attention != "sdpa":
        raise ValueError(f"attention: expected 'eager' or 'sdpa', found {attention!r}")
    few = {name: t[:2] for name, t in sample.items()}
    model.eval()
    with torch.no_grad():
        eager = model(**few).prediction_logits
        if _use_sdpa(model) != cfg.num_hidden_layers:
            raise Unavailable("transformers' VisualBERT layout changed: could not find every self-attention module")
        sdpa = model(**few).prediction_logits
    model.train()
    if not torch.allclose(eager, sdpa, atol=1e-4, rtol=1e-4):  # fp32, same math in another order
        error = (eager - sdpa).abs().max().item()
        raise Unavailable(f"the SDPA attention does not reproduce VisualBERT's eager output (max error {error:.2e})")
    return model
