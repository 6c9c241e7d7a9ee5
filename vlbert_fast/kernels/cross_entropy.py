"""The per-row step of the chunked linear cross-entropy in Triton: loss and logits gradient of a chunk in one pass.

The op, its arguments and its reference are specified in `vlbert_fast/ops/cross_entropy.py`, which also owns the
chunk loop (the matmuls there are cuBLAS's; this kernel replaces the elementwise work between them).

One program per row of the chunk's logits [C, V]: an online log-sum-exp over blocks of the vocabulary (fp32 running
maximum and sum, Milakov & Gimelshein 2018), the loss lse - z[label], then a second sweep that overwrites the row with
softmax - one_hot, so the chunk's logits buffer becomes its gradient without another allocation. Rows whose label is
ignore_index get loss 0 and a zero gradient.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .utils import row_warps

MAX_BLOCK_V = 4096  # vocabulary columns per step: 16 fp32 per thread at 8 warps, no spills; 30522 takes 8 steps


@triton.jit
def _cross_entropy_fwd_bwd_kernel(
    logits_ptr,  # input and output, [C, V] row stride stride_l: logits in, d loss_row / d logits out
    loss_ptr,  # output, [C] fp32 loss of each row (0 where ignored)
    labels_ptr,  # [C] int64 target class or ignore_index
    vocab,  # V
    stride_l,
    ignore_index,
    BLOCK_V: tl.constexpr,  # vocabulary columns per step
):
    """Softmax cross-entropy of one row and its gradient (module docstring)."""
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride_l
    label = tl.load(labels_ptr + row)
    valid = label != ignore_index
    cols = tl.arange(0, BLOCK_V)
    m = float("-inf")
    total = 0.0
    for v0 in range(0, vocab, BLOCK_V):
        z = tl.load(base + v0 + cols, mask=v0 + cols < vocab, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(z, axis=0))
        total = total * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), axis=0)
        m = m_new
    lse = m + tl.log(total)
    target = tl.load(base + tl.where(valid, label, 0)).to(tl.float32)
    tl.store(loss_ptr + row, tl.where(valid, lse - target, 0.0))
    for v0 in range(0, vocab, BLOCK_V):
        mask = v0 + cols < vocab
        z = tl.load(base + v0 + cols, mask=mask, other=0.0).to(tl.float32)
        grad = tl.exp(z - lse) - tl.where(v0 + cols == label, 1.0, 0.0)
        grad = tl.where(valid, grad, 0.0)
        tl.store(base + v0 + cols, grad.to(logits_ptr.dtype.element_ty), mask=mask)


def cross_entropy_rows(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Each row's loss ([C] fp32, 0 where ignored); `logits` [C, V] (last dimension contiguous) is overwritten with
    softmax - one_hot. The same contract as ops/cross_entropy.py's `cross_entropy_rows_torch`."""
    rows, vocab = logits.shape
    if logits.stride(-1) != 1:
        raise ValueError(f"logits: the last dimension must be contiguous, found strides {logits.stride()}")
    losses = torch.empty(rows, dtype=torch.float32, device=logits.device)
    if rows == 0:
        return losses
    block = min(MAX_BLOCK_V, triton.next_power_of_2(max(vocab, 16)))
    _cross_entropy_fwd_bwd_kernel[(rows,)](
        logits, losses, labels.contiguous(), vocab, logits.stride(0), ignore_index, BLOCK_V=block,
        num_warps=row_warps(block),
    )  # fmt: skip
    return losses
