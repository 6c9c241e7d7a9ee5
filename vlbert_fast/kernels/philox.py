"""Philox uniform draws on a GPU: `tl.rand(seed, counters)` written out, for the plain-PyTorch references running on
CUDA tensors (ops/dropout.py's `philox_uniform`). The fused kernels never call this: they draw in-kernel with the
same `tl.rand`, so a mask drawn here equals the one a kernel draws for the same seed and counters.

One program per BLOCK counters; counters are read as int32 so tl.rand takes its 32-bit Philox path (the one the
fused kernels take and the CPU twins spell out).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024  # counters per program: 8 per thread at 4 warps, a few registers each


@triton.jit
def _philox_uniform_kernel(
    out_ptr,  # output, [n] fp32
    counters_ptr,  # [n] int64 or int32 counters, below 2**31
    n,  # number of counters
    seed,  # Philox key (low word, high word)
    BLOCK: tl.constexpr,  # counters per program
):
    """out[i] = tl.rand(seed, counters[i]) (Salmon et al., SC 2011: Philox-4x32-10)."""
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    counter = tl.load(counters_ptr + offs, mask=mask, other=0).to(tl.int32)
    tl.store(out_ptr + offs, tl.rand(seed, counter), mask=mask)


def philox_uniform_triton(seed: int, counters: torch.Tensor) -> torch.Tensor:
    """fp32 draws of the shape of `counters` (int64 or int32, values below 2**31)."""
    flat = counters.contiguous().view(-1)
    out = torch.empty(flat.shape, dtype=torch.float32, device=counters.device)
    if flat.numel():
        _philox_uniform_kernel[(triton.cdiv(flat.numel(), BLOCK),)](out, flat, flat.numel(), seed, BLOCK=BLOCK)
    return out.view(counters.shape)
