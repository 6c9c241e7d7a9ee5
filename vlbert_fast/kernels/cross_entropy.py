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
    padded,  # columns each row may read and write: V, or V rounded up to 16 when the padding is scratch
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
    # Masks against `padded` (a multiple of 16 when the row is padded): a mask that is constant over 16-byte groups
    # keeps the loads and stores 128 bits wide; the columns from V to padded are scratch, read as -inf and zeroed.
    for v0 in range(0, vocab, BLOCK_V):
        z = tl.load(base + v0 + cols, mask=v0 + cols < padded, other=float("-inf")).to(tl.float32)
        z = tl.where(v0 + cols < vocab, z, float("-inf"))
        m_new = tl.maximum(m, tl.max(z, axis=0))
        total = total * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), axis=0)
        m = m_new
    lse = m + tl.log(total)
    target = tl.load(base + tl.where(valid, label, 0)).to(tl.float32)
    tl.store(loss_ptr + row, tl.where(valid, lse - target, 0.0))
    for v0 in range(0, vocab, BLOCK_V):
        mask = v0 + cols < padded
        z = tl.load(base + v0 + cols, mask=mask, other=0.0).to(tl.float32)
        grad = tl.exp(z - lse) - tl.where(v0 + cols == label, 1.0, 0.0)
        grad = tl.where(valid & (v0 + cols < vocab), grad, 0.0)
        tl.store(base + v0 + cols, grad.to(logits_ptr.dtype.element_ty), mask=mask)


def _scratch_width(logits: torch.Tensor, align: int = 16) -> int:
    """V rounded up to `align` when every row of `logits` has that many columns of its own storage (the row stride
    is a multiple of `align` and the storage holds the last row's padding), else V."""
    rows, vocab = logits.shape
    padded = -(-vocab // align) * align
    stride = logits.stride(0) if rows > 1 else padded
    end = logits.storage_offset() + (rows - 1) * stride + padded
    if stride % align or stride < padded or end * logits.element_size() > logits.untyped_storage().nbytes():
        return vocab
    return padded


def cross_entropy_rows(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, padding_is_scratch: bool = False
) -> torch.Tensor:
    """Each row's loss ([C] fp32, 0 where ignored); `logits` [C, V] (last dimension contiguous) is overwritten with
    softmax - one_hot. The same contract as ops/cross_entropy.py's `cross_entropy_rows_torch`.

    padding_is_scratch: the caller owns the columns from V up to V rounded to 16 beyond each row (ops/
    cross_entropy.py's `linear_padded`); the kernel then reads and zeroes them, which keeps every access 16 bytes
    wide. Without it, or where the storage has no such padding, only the V columns are touched."""
    rows, vocab = logits.shape
    if logits.stride(-1) != 1:
        raise ValueError(f"logits: the last dimension must be contiguous, found strides {logits.stride()}")
    padded = _scratch_width(logits) if padding_is_scratch else vocab
    losses = torch.empty(rows, dtype=torch.float32, device=logits.device)
    if rows == 0:
        return losses
    block = min(MAX_BLOCK_V, triton.next_power_of_2(max(vocab, 16)))
    _cross_entropy_fwd_bwd_kernel[(rows,)](
        logits, losses, labels.contiguous(), vocab, padded, logits.stride(0), ignore_index, BLOCK_V=block,
        num_warps=row_warps(block),
    )  # fmt: skip
    return losses
