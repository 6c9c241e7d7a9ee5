"""Post-LN BERT encoder, plain PyTorch on the padded layout: the reference for the packed/fused encoder.

Legend: B samples, L tokens per row, H hidden size, N heads, D head size.

Each layer: x = LN(x + Dropout(Out(Attention(x)))); x = LN(x + Dropout(Down(GELU(Up(x))))), with BERT's erf GELU
and LayerNorm eps 1e-12. Q, K and V come from one fused Linear (H -> 3H); HF BERT's separate query/key/value
weights are concatenated when loaded (model/hf_bert.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.head_dim
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.out = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.attention_probs_dropout_prob)

    def forward(self, x_BLH: torch.Tensor, mask_BL: torch.Tensor) -> torch.Tensor:
        b, seq, h = x_BLH.shape
        qkv = self.qkv(x_BLH).view(b, seq, 3, self.num_heads, self.head_dim)
        q_BNLD, k_BNLD, v_BNLD = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        scores_BNLL = torch.matmul(q_BNLD, k_BNLD.transpose(-1, -2)) / math.sqrt(self.head_dim)
        scores_BNLL = scores_BNLL.masked_fill(~mask_BL[:, None, None, :], torch.finfo(scores_BNLL.dtype).min)
        probs_BNLL = self.dropout(torch.softmax(scores_BNLL, dim=-1))
        context_BLH = torch.matmul(probs_BNLL, v_BNLD).transpose(1, 2).reshape(b, seq, h)
        return self.out(context_BLH)


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.up = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.down = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x_BLH: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x_BLH)))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention = SelfAttention(cfg)
        self.attention_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn = FeedForward(cfg)
        self.ffn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x_BLH: torch.Tensor, mask_BL: torch.Tensor) -> torch.Tensor:
        x_BLH = self.attention_norm(x_BLH + self.dropout(self.attention(x_BLH, mask_BL)))
        return self.ffn_norm(x_BLH + self.dropout(self.ffn(x_BLH)))


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x_BLH: torch.Tensor, mask_BL: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x_BLH = layer(x_BLH, mask_BL)
        return x_BLH
