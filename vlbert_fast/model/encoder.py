"""Post-LN BERT encoder, two ways over the same parameters.

Legend: B samples, L tokens per row (padded), N tokens in the packed stream, H hidden size, n heads, D head size,
I intermediate size.

Each layer: x = LN(x + Dropout(Out(Attention(x)))); x = LN(x + Dropout(Down(GELU(Up(x))))), with BERT's erf GELU
and LayerNorm eps 1e-12. Q, K and V come from one fused Linear (H -> 3H); HF BERT's separate query/key/value
weights are concatenated when loaded (model/hf_bert.py).

- `forward` (padded [B, L, H] with a key mask): plain PyTorch, the reference the packed path is tested against.
  It can return every layer's attention probabilities (`vlbert-fast attention-maps` draws them).
- `forward_packed` ([N, H] with cu_seqlens): no padding is computed. Attention is `ops.varlen_attention_packed` on
  the fused QKV projection [N, 3, n, D] (backend `cfg.attention`, fp32 precision `cfg.attention_precision`), whose
  backward writes the three gradients into one [N, 3, n, D] tensor: the projection's output gets one gradient, with
  no per-part zero buffers and no sum of them (q, k, v as three views would cost both). The output and down
  projections run without their bias, which `ops.bias_dropout_residual_layer_norm` adds together with dropout, the
  residual and the LayerNorm; the up projection's bias and the GELU are `ops.bias_gelu` (backends `cfg.kernels`).

`cfg.activation_checkpointing` picks layers whose activations are recomputed in the backward (both paths).
Dropout stays exact under recomputation: the fused ops draw their keys from the generator of the inputs' device,
whose state torch.utils.checkpoint restores before recomputing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import ModelConfig
from ..config.model import checkpointed_layers
from ..ops import bias_dropout_residual_layer_norm, bias_gelu, varlen_attention_packed


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.head_dim
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.out = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.attention_probs_dropout_prob)
        self.backend = cfg.attention
        self.precision = cfg.attention_precision

    def forward(
        self, x_BLH: torch.Tensor, mask_BL: torch.Tensor, return_probs: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:  # [B, L, H] (and the probabilities [B, n, L, L])
        b, seq, h = x_BLH.shape
        qkv = self.qkv(x_BLH).view(b, seq, 3, self.num_heads, self.head_dim)
        q_BnLD, k_BnLD, v_BnLD = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        scores_BnLL = torch.matmul(q_BnLD, k_BnLD.transpose(-1, -2)) / math.sqrt(self.head_dim)
        scores_BnLL = scores_BnLL.masked_fill(~mask_BL[:, None, None, :], torch.finfo(scores_BnLL.dtype).min)
        probs_BnLL = torch.softmax(scores_BnLL, dim=-1)
        context_BLH = torch.matmul(self.dropout(probs_BnLL), v_BnLD).transpose(1, 2).reshape(b, seq, h)
        out_BLH = self.out(context_BLH)
        return (out_BLH, probs_BnLL) if return_probs else out_BLH

    def forward_packed(
        self, x_NH: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int
    ) -> torch.Tensor:  # [N, H] the output projection *without* its bias (the fused LayerNorm op adds it)
        n = x_NH.shape[0]
        qkv_N3nD = self.qkv(x_NH).view(n, 3, self.num_heads, self.head_dim)
        context_NnD = varlen_attention_packed(
            qkv_N3nD,
            cu_seqlens,
            max_seqlen,
            dropout_p=self.dropout.p if self.training else 0.0,
            backend=self.backend,
            check=False,
            precision=self.precision,
        )
        return F.linear(context_NnD.reshape(n, -1), self.out.weight)


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.up = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.down = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.kernels = cfg.kernels

    def forward(self, x_BLH: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x_BLH)))

    def forward_packed(self, x_NH: torch.Tensor) -> torch.Tensor:  # [N, H] without the down projection's bias
        up_NI = bias_gelu(F.linear(x_NH, self.up.weight), self.up.bias, backend=self.kernels)
        return F.linear(up_NI, self.down.weight)


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention = SelfAttention(cfg)
        self.attention_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn = FeedForward(cfg)
        self.ffn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        self.kernels = cfg.kernels

    def forward(
        self,
        x_BLH: torch.Tensor,
        mask_BL: torch.Tensor | None = None,
        return_probs: bool = False,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int = 0,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The padded layer ([B, L, H] with mask_BL), or with `cu_seqlens` the packed one on [N, H]: both through
        the module call, so DeepSpeed ZeRO-3's hooks gather the layer's parameters either way."""
        if cu_seqlens is not None:
            return self.forward_packed(x_BLH, cu_seqlens, max_seqlen)
        attended = self.attention(x_BLH, mask_BL, return_probs=return_probs)
        attended_BLH, probs = attended if return_probs else (attended, None)
        x_BLH = self.attention_norm(x_BLH + self.dropout(attended_BLH))
        x_BLH = self.ffn_norm(x_BLH + self.dropout(self.ffn(x_BLH)))
        return (x_BLH, probs) if return_probs else x_BLH

    def forward_packed(self, x_NH: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int) -> torch.Tensor:
        p = self.dropout.p if self.training else 0.0
        x_NH = self._residual_norm(self.attention.forward_packed(x_NH, cu_seqlens, max_seqlen),
                                   self.attention.out.bias, x_NH, self.attention_norm, p)  # fmt: skip
        return self._residual_norm(self.ffn.forward_packed(x_NH), self.ffn.down.bias, x_NH, self.ffn_norm, p)

    def _residual_norm(self, out_NH, bias_H, residual_NH, norm: nn.LayerNorm, p: float) -> torch.Tensor:
        return bias_dropout_residual_layer_norm(
            out_NH, bias_H, residual_NH, norm.weight, norm.bias, eps=norm.eps, dropout_p=p, backend=self.kernels
        )


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.checkpointed = checkpointed_layers(cfg.activation_checkpointing, cfg.num_hidden_layers)

    def _call(self, index: int, fn, *args):
        """Runs one layer, recomputing it in the backward when the config checkpoints it and a graph is built."""
        if index in self.checkpointed and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def forward(
        self, x_BLH: torch.Tensor, mask_BL: torch.Tensor, return_probs: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:  # [B, L, H] (and per layer [B, n, L, L])
        all_probs = []
        for i, layer in enumerate(self.layers):
            if return_probs:
                x_BLH, probs_BnLL = layer(x_BLH, mask_BL, return_probs=True)
                all_probs.append(probs_BnLL)
            else:
                x_BLH = self._call(i, layer, x_BLH, mask_BL)
        return (x_BLH, all_probs) if return_probs else x_BLH

    def forward_packed(self, x_NH: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x_NH = self._call(i, layer, x_NH, None, False, cu_seqlens, max_seqlen)
        return x_NH
