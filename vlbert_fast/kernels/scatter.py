"""Deterministic scatter-add of rows: out[r] = sum of rows[n] over the n with index[n] == r, in order of n.

Atomic adds into a table make its gradient depend on the order threads happen to run in; this adds each
destination row's contributions in a fixed order instead (one program per destination row, after a stable sort by
destination), so the result is bitwise the same on every run. Used by the deterministic mode of the embedding
backward (kernels/embedding.py); the sort and `unique_consecutive` synchronise with the host once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .utils import row_block, row_warps


@triton.jit
def _segment_sum_kernel(
    out_ptr,  # output, [R, H] fp32, zero-initialised; row `target` receives its segment's sum
    rows_ptr,  # input, [N, H] fp32 contiguous source rows
    order_ptr,  # input, [M] int64 source rows sorted by destination (stable: source order within a destination)
    segment_start_ptr,  # input, [S] int64 first entry of each segment in order_ptr
    segment_count_ptr,  # input, [S] int64 entries per segment
    segment_target_ptr,  # input, [S] int64 destination row of each segment
    hidden,  # H
    BLOCK_H: tl.constexpr,  # next power of two >= H
):
    """One destination row per program, its sources added one after another in source order."""
    segment = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_H)
    hmask = cols < hidden
    first = tl.load(segment_start_ptr + segment)
    count = tl.load(segment_count_ptr + segment)
    acc = tl.zeros((BLOCK_H,), dtype=tl.float32)
    for j in range(first, first + count):
        source = tl.load(order_ptr + j)
        acc += tl.load(rows_ptr + source * hidden + cols, mask=hmask, other=0.0)
    tl.store(out_ptr + tl.load(segment_target_ptr + segment) * hidden + cols, acc, mask=hmask)


def segment_sum(
    rows: torch.Tensor,  # [N, H] fp32
    index: torch.Tensor,  # [N] int destination row of each source row, -1 for none
    num_rows: int,  # R
) -> torch.Tensor:  # [R, H] fp32
    """out[r] = sum of rows[n] with index[n] == r, added in order of n; rows nobody targets stay zero."""
    rows = rows.contiguous()
    out = torch.zeros(num_rows, rows.shape[1], dtype=torch.float32, device=rows.device)
    sources = (index >= 0).nonzero().squeeze(1)
    if sources.numel() == 0:
        return out
    targets, order = torch.sort(index[sources], stable=True)
    targets, counts = torch.unique_consecutive(targets, return_counts=True)
    starts = counts.cumsum(0) - counts
    block = row_block(rows.shape[1])
    _segment_sum_kernel[(targets.numel(),)](
        out, rows, sources[order].contiguous(), starts, counts, targets, rows.shape[1],
        BLOCK_H=block, num_warps=row_warps(block),
    )  # fmt: skip
    return out
