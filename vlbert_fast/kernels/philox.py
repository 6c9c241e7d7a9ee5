"""Philox uniform draws on a GPU: `tl.rand(seed, counters)` written out, for the plain-PyTorch references running on
CUDA tensors (ops/dropout.py's `philox_uniform`). The fused kernels never call this: they draw in-kernel with the
same `tl.rand`, so a mask drawn here equals the one a kernel draws for the same seed and counters.

One program per BLOCK counters; counters are read as int32 so tl.rand takes its 32-bit Philox path (the one the
fused kernels take and the CPU twins spell out).

Every kernel that draws (here, kernels/embedding.py, layer_norm.py, attention*.py) reads its Philox key from a [1]
int64 tensor on the device (`seed_pointer`), never from a host integer: drawing the key needs no host sync, Dynamo
sees no Python int to specialise on, and a CUDA graph replays with the key its generator draws on the device each
time instead of one frozen at capture.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024  # counters per program: 8 per thread at 4 warps, a few registers each


_NO_KEY: dict[str, torch.Tensor] = {}


def seed_pointer(seed: torch.Tensor | int | None, device: torch.device) -> torch.Tensor:
    """The [1] int64 tensor on `device` a kernel reads its Philox key from: `seed` itself when it is one (the ops
    pass the key they drew on the device), an integer copied there (tests and benchmarks pass integers), or for None
    (no dropout: the kernels never read it) one zero per device, made once, so a launch without dropout allocates
    and copies nothing (a host-to-device copy could not be captured in a CUDA graph)."""
    if seed is None:
        key = _NO_KEY.get(str(device))
        if key is None:
            key = _NO_KEY[str(device)] = torch.zeros(1, dtype=torch.int64, device=device)
        return key
    if isinstance(seed, torch.Tensor):
        if seed.dtype != torch.int64 or seed.numel() != 1 or seed.device != torch.device(device):
            raise ValueError(
                f"seed: expected a one-element int64 tensor on {device}, found {seed.dtype} {tuple(seed.shape)} "
                f"on {seed.device}"
            )
        return seed.reshape(1)
    return torch.tensor([int(seed)], dtype=torch.int64, device=device)


@triton.jit
def _philox_uniform_kernel(
    out_ptr,  # output, [n] fp32
    counters_ptr,  # [n] int64 or int32 counters, below 2**31
    n,  # number of counters
    seed_ptr,  # [1] int64 Philox key (low word, high word), read on the device
    BLOCK: tl.constexpr,  # counters per program
):
    """out[i] = tl.rand(seed, counters[i]) (Salmon et al., SC 2011: Philox-4x32-10)."""
    seed = tl.load(seed_ptr)
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    counter = tl.load(counters_ptr + offs, mask=mask, other=0).to(tl.int32)
    tl.store(out_ptr + offs, tl.rand(seed, counter), mask=mask)


def philox_uniform_triton(seed: torch.Tensor | int, counters: torch.Tensor) -> torch.Tensor:
    """fp32 draws of the shape of `counters` (int64 or int32, values below 2**31); `seed` an int or a [1] int64
    tensor on the counters' device."""
    flat = counters.contiguous().view(-1)
    out = torch.empty(flat.shape, dtype=torch.float32, device=counters.device)
    if flat.numel():
        key = seed_pointer(seed, counters.device)
        _philox_uniform_kernel[(triton.cdiv(flat.numel(), BLOCK),)](out, flat, flat.numel(), key, BLOCK=BLOCK)
    return out.view(counters.shape)
