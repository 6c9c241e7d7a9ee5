"""Shared builders for model tests: a random HF BERT of the tiny config, and batches from examples."""

import torch
from transformers import BertConfig, BertForPreTraining

from vlbert_fast.config import ModelConfig


def hf_config(cfg: ModelConfig, **overrides) -> BertConfig:
    kwargs = dict(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        type_vocab_size=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=cfg.layer_norm_eps,
        hidden_act="gelu",
    )
    kwargs.update(overrides)
    return BertConfig(**kwargs)


def random_hf_bert(cfg: ModelConfig, seed: int = 0) -> BertForPreTraining:
    """A HF BertForPreTraining with every parameter random (LayerNorms included, so a swapped mapping shows)."""
    torch.manual_seed(seed)
    hf = BertForPreTraining(hf_config(cfg, attn_implementation="eager")).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return hf
