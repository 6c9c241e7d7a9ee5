"""Pretraining heads, run only on the positions that have targets. Legend: M positions, H hidden, V vocab, C classes.

- MLM (BERT's prediction head): Dense(H -> H) + GELU + LayerNorm, then a decoder tied to the word embeddings plus
  its own bias. The tied weight is passed in at call time, so no module is shared between two owners.
- Masked-RoI classification (the original's MVRC head): Dense(H -> H) + GELU, then Linear(H -> C), trained with
  soft cross-entropy against the detector's class distribution.

`forward` is the plain reference. The packed model calls the fused pieces instead: `transform(..., fused=True)`
(the dense layer's bias and the GELU as `ops.bias_gelu`) and `MLMHead.loss`, the decoder and the cross-entropy as
`ops.linear_cross_entropy`, which never holds more than a chunk of the [M, V] logits (backends `cfg.kernels`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..data.batch import IGNORE_INDEX
from ..ops import bias_gelu, linear_cross_entropy


def _dense_gelu(dense: nn.Linear, hidden_MH: torch.Tensor, fused: bool, backend: str) -> torch.Tensor:
    if fused:
        return bias_gelu(F.linear(hidden_MH, dense.weight), dense.bias, backend=backend)
    return F.gelu(dense(hidden_MH))


class MLMHead(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.kernels = cfg.kernels

    def transform(self, hidden_MH: torch.Tensor, fused: bool = False) -> torch.Tensor:  # [M, H]
        return self.layer_norm(_dense_gelu(self.dense, hidden_MH, fused, self.kernels))

    def decode(self, x_MH: torch.Tensor, word_embeddings_VH: torch.Tensor) -> torch.Tensor:  # [M, V]
        return F.linear(x_MH, word_embeddings_VH, self.bias)

    def forward(self, hidden_MH: torch.Tensor, word_embeddings_VH: torch.Tensor) -> torch.Tensor:  # [M, V]
        return self.decode(self.transform(hidden_MH), word_embeddings_VH)

    def loss(self, x_MH: torch.Tensor, word_embeddings_VH: torch.Tensor, labels_M: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the decoder on transformed positions, fused and chunked (no [M, V] logits)."""
        return linear_cross_entropy(
            x_MH, word_embeddings_VH, self.bias, labels_M, ignore_index=IGNORE_INDEX, backend=self.kernels
        )


class RoIClassificationHead(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.classifier = nn.Linear(cfg.hidden_size, cfg.num_roi_classes)
        self.kernels = cfg.kernels

    def forward(self, hidden_MH: torch.Tensor, fused: bool = False) -> torch.Tensor:  # [M, C]
        return self.classifier(_dense_gelu(self.dense, hidden_MH, fused, self.kernels))


def soft_cross_entropy(logits_MC: torch.Tensor, targets_MC: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum_c target_c * log_softmax(logits)_c (the original's soft_cross_entropy)."""
    log_probs = torch.log_softmax(logits_MC.float(), dim=-1)
    return -(targets_MC.float() * log_probs).sum(-1).mean()
