"""Packed q, k, v for the attention tests: sequences of given lengths, random values, cu_seqlens as the op takes it."""

from __future__ import annotations

import torch


def cu_seqlens_of(lengths: list[int]) -> torch.Tensor:
    """[B+1] int32 cumulative lengths, starting at 0."""
    return torch.tensor([0, *torch.tensor(lengths, dtype=torch.long).cumsum(0).tolist()], dtype=torch.int32)


def packed_qkv(lengths: list[int], heads: int, head_dim: int, dtype=torch.float32, seed: int = 0):
    """(q, k, v, cu_seqlens, max_seqlen, grad_out); q, k, v leaf tensors requiring gradients. Values are scaled so
    the scores spread over a few units (softmax neither uniform nor one-hot)."""
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    q, k, v = (torch.randn(total, heads, head_dim, generator=g).to(dtype).requires_grad_(True) for _ in range(3))
    grad_out = torch.randn(total, heads, head_dim, generator=g).to(dtype)
    return q, k, v, cu_seqlens_of(lengths), max(lengths, default=0), grad_out


def output_and_grads(fn, q, k, v, grad_out, **kwargs) -> tuple[torch.Tensor, ...]:
    """(out, dq, dk, dv) of `fn(q, k, v, **kwargs)` against grad_out."""
    out = fn(q, k, v, **kwargs)
    if out.numel() == 0:
        return (out, torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v))
    return (out, *torch.autograd.grad(out, (q, k, v), grad_out))


def block_diagonal_attention(q, k, v, cu_seqlens, dropout_keep=None, dropout_p=0.0, softmax_scale=None):
    """An independent spelling of the op: all T tokens at once, with a mask allowing only pairs of one sequence,
    in fp64. `dropout_keep` [heads, T, T] (entries outside the blocks ignored) applies a given mask."""
    total, heads, head_dim = q.shape
    seq = torch.repeat_interleave(torch.arange(len(cu_seqlens) - 1), (cu_seqlens[1:] - cu_seqlens[:-1]).long())
    same = seq[:, None] == seq[None, :]
    scale = head_dim**-0.5 if softmax_scale is None else softmax_scale
    qd, kd, vd = (t.double().transpose(0, 1) for t in (q, k, v))  # [heads, T, D]
    scores = (qd @ kd.transpose(1, 2)) * scale
    probs = torch.softmax(scores.masked_fill(~same, float("-inf")), dim=-1)
    if dropout_keep is not None:
        probs = torch.where(dropout_keep, probs / (1 - dropout_p), 0.0)
    return (probs @ vd).transpose(0, 1)
