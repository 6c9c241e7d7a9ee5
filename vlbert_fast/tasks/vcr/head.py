"""VCR's head: each choice's row is scored from its pooled [CLS]. Legend: S samples, C choices (4), B = S x C rows,
L tokens per row, H hidden.

score = Linear(H -> 1)(Dropout(tanh(Dense(H -> H)(hidden at [CLS])))), logits [S, C] (the original's VCR model:
BERT's pooler on the first token, then its "1fc" classifier, Dropout + Linear, the Linear xavier-uniform with a zero
bias). The pooler starts from BERT's, as the original's does: `init_from` a Hugging Face BERT directory gives it
directly; a pretraining run or export of ours carries it when pretrained with `model.with_pooler` (the paper
configs) from a BERT directory; `vlbert-fast convert-checkpoint --bert DIR` puts it into a converted original
checkpoint. Without one it starts at BERT's initialisation, normal(0, 0.02) weights and zero bias.
"""

from __future__ import annotations

import torch
from torch import nn

POOLER_KEYS = ("pooler.dense.weight", "pooler.dense.bias")


class VCRHead(nn.Module):
    def __init__(self, hidden_size: int, dropout: float = 0.1, initializer_range: float = 0.02):
        super().__init__()
        self.pooler = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.scorer = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.pooler.weight, std=initializer_range)
        nn.init.zeros_(self.pooler.bias)
        nn.init.xavier_uniform_(self.scorer.weight)
        nn.init.zeros_(self.scorer.bias)

    def forward(self, hidden_BLH: torch.Tensor, task_batch) -> torch.Tensor:  # [S, C]
        rows = task_batch.rows_per_sample
        pooled_BH = torch.tanh(self.pooler(hidden_BLH[:, 0]))
        scores_B = self.scorer(self.dropout(pooled_BH)).squeeze(-1)
        if scores_B.shape[0] % rows:
            raise ValueError(f"VCRHead: {scores_B.shape[0]} rows are not a whole number of samples of {rows} choices")
        return scores_B.view(-1, rows)


def init_pooler(head: VCRHead, state: dict[str, torch.Tensor]) -> list[str]:
    """Copies a pooler from a pretraining state dict (any key ending in pooler.dense.weight/bias, e.g. BERT's
    `bert.pooler.dense.weight`); returns the report lines."""
    found = {}
    for suffix in POOLER_KEYS:
        keys = sorted(k for k in state if k == suffix or k.endswith("." + suffix))
        if len(keys) > 1:
            raise ValueError(f"VCR head: several pooler weights in the pretraining state: {keys}")
        if keys:
            found[suffix] = keys[0]
    if len(found) != len(POOLER_KEYS):
        return [
            "vcr head: pooler.dense <- fresh (normal 0.02; the pretraining state has no pooler)",
            "vcr head: scorer <- fresh (xavier uniform, zero bias)",
        ]
    with torch.no_grad():
        for suffix, key in found.items():
            target = head.pooler.weight if suffix.endswith("weight") else head.pooler.bias
            if tuple(state[key].shape) != tuple(target.shape):
                raise ValueError(
                    f"VCR head: {key} has shape {tuple(state[key].shape)}, the head needs {tuple(target.shape)}"
                )
            target.copy_(state[key])
    lines = [f"vcr head: pooler.dense.{s.rsplit('.', 1)[1]} <- {k}" for s, k in found.items()]
    return [*lines, "vcr head: scorer <- fresh (xavier uniform, zero bias)"]
