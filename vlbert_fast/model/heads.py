"""Pretraining heads, run only on the positions that have targets. Legend: M positions, H hidden, V vocab, C classes.

- MLM (BERT's prediction head): Dense(H -> H) + GELU + LayerNorm, then a decoder tied to the word embeddings plus
  its own bias. The tied weight is passed in at call time, so no module is shared between two owners.
- Masked-RoI classification (the original's MVRC head): Dense(H -> H) + GELU, then Linear(H -> C), trained with
  soft cross-entropy against the detector's class distribution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig


class MLMHead(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, hidden_MH: torch.Tensor, word_embeddings_VH: torch.Tensor) -> torch.Tensor:  # [M, V]
        x_MH = self.layer_norm(F.gelu(self.dense(hidden_MH)))
        return F.linear(x_MH, word_embeddings_VH, self.bias)


class RoIClassificationHead(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.classifier = nn.Linear(cfg.hidden_size, cfg.num_roi_classes)

    def forward(self, hidden_MH: torch.Tensor) -> torch.Tensor:  # [M, C]
        return self.classifier(F.gelu(self.dense(hidden_MH)))


def soft_cross_entropy(logits_MC: torch.Tensor, targets_MC: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum_c target_c * log_softmax(logits)_c (the original's soft_cross_entropy)."""
    log_probs = torch.log_softmax(logits_MC.float(), dim=-1)
    return -(targets_MC.float() * log_probs).sum(-1).mean()
