"""Pretraining heads, run only on the positions that have targets. Legend: M positions, H hidden, V vocab, C classes.

- MLM (BERT's prediction head): Dense(H -> H) + GELU + LayerNorm, then a decoder tied to the word embeddings plus
  its own bias. The tied weight is passed in at call time, so no module is shared between two owners.
- Masked-RoI classification (the original's MVRC head): Dense(H -> H) + GELU, then Linear(H -> C), trained with
  soft cross-entropy against the detector's class distribution.
- Pooler (BERT's): Dense(H -> H) + tanh on a row's first token; the relationship head (the original's
  `VisualLinguisticBertRelationshipPredictionHead`): Linear(H -> 2) on the pooled token, cross-entropy.

Each head is called once per forward, through `nn.Module.__call__`, on however many rows have targets (possibly
none): the same modules in the same order on every rank, as DeepSpeed ZeRO-3's parameter gathering requires.
`MLMHead.forward` without labels returns the plain reference's logits; with labels (the packed model) it computes
each group's loss with the fused pieces: the dense layer's bias and the GELU as `ops.bias_gelu`, the decoder and the
cross-entropy as `ops.linear_cross_entropy`, which never holds more than a chunk of the [M, V] logits (backends
`cfg.kernels`). `anchor` outputs are an exact 0 that depends on every parameter of the head (not on the tied word
embeddings, which the embedding always reaches), so a batch without targets still gives each parameter a (zero)
gradient, as ZeRO-1/2's gradient reduction requires.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..ops import bias_gelu, linear_cross_entropy
from ..vocabulary import IGNORE_INDEX


def _dense_gelu(dense: nn.Linear, hidden_MH: torch.Tensor, fused: bool, backend: str) -> torch.Tensor:
    if fused:
        return bias_gelu(F.linear(hidden_MH, dense.weight), dense.bias, backend=backend)
    return F.gelu(dense(hidden_MH))


class MLMLosses(NamedTuple):  # a named tuple: DeepSpeed's hooks find the tensors inside (not in a dataclass)
    anchor: torch.Tensor
    """An exact 0 that depends on every parameter of the head (module docstring)."""
    losses: dict[str, torch.Tensor]
    logits: torch.Tensor | None


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

    def forward(
        self,
        hidden_MH: torch.Tensor,
        word_embeddings_VH: torch.Tensor,
        labels_M: torch.Tensor | None = None,
        groups: dict[str, torch.Tensor] | None = None,
        return_logits: bool = False,
    ) -> torch.Tensor | MLMLosses:
        """Without labels: the logits [M, V] (the reference). With labels: the fused mean cross-entropy over the rows
        of each group (name -> [M] bool), and the logits too if asked. A group without rows gets an exact 0 that
        depends on the head: every rank returns the same tensors whatever its batch holds, as ZeRO-3 requires (its
        trace of the backward counts one parameter fetch per output tensor; a rank whose count differs leaves the
        others waiting in a collective). The caller drops those zeros from what it reports."""
        if labels_M is None:
            return self.decode(self.transform(hidden_MH), word_embeddings_VH)
        x_MH = self.transform(hidden_MH, fused=True)
        # Evaluation reads the predictions; the loss then comes from them, not from a second pass.
        logits_MV = self.decode(x_MH, word_embeddings_VH) if return_logits else None
        losses = {}
        for name, rows_M in (groups or {"mlm": torch.ones_like(labels_M, dtype=torch.bool)}).items():
            if not bool(rows_M.any()):
                losses[name] = self._zero(x_MH)
            elif logits_MV is not None:
                losses[name] = F.cross_entropy(logits_MV[rows_M].float(), labels_M[rows_M])
            else:
                losses[name] = linear_cross_entropy(
                    x_MH[rows_M], word_embeddings_VH, self.bias, labels_M[rows_M], IGNORE_INDEX, backend=self.kernels
                )
        return MLMLosses(self._zero(x_MH), losses, logits_MV)

    def _zero(self, x_MH: torch.Tensor) -> torch.Tensor:
        """An exact 0 that depends on every parameter of the head (dense and LayerNorm through x, the decoder bias),
        not on the tied word embeddings: those always have their gradient from the embedding, and a zero through
        them would cost a zero-filled [V, H] gradient and its addition (about 10% of a Base step on a CPU)."""
        return x_MH[:0].sum() + self.bias[:0].sum()


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


class Pooler(nn.Module):
    """BERT's pooler: tanh(Dense(H -> H)) of each row's first token (`pooler.dense` as in BERT's names)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, first_SH: torch.Tensor) -> torch.Tensor:  # [S, H]
        return torch.tanh(self.dense(first_SH))
