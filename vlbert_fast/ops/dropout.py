"""The dropout draws of the fused ops (embedding, residual LayerNorm), one definition on every device.

    philox_uniform(seed, counters) -> fp32 draws in [0, 1), the shape of counters
    dropout_counters(offset, n, hidden, device) -> [n, hidden] int64: offset + n * hidden + h

A draw is Triton's `tl.rand(seed, counter)` for an int32 counter: Philox-4x32-10 (Salmon et al., "Parallel random
numbers: as easy as 1, 2, 3", SC 2011) keyed by (seed low word, seed high word) on the counter (c, 0, 0, 0); the first
output word, read as int32, folded to non-negative (x < 0 -> -x - 1) and scaled by 4.6566127342e-10 in fp32. An
element is kept when its draw is >= p. Counters stay below 2**31 (`MAX_COUNTER`), seeds in [0, 2**63).

Where the draws are made (`philox_uniform` picks by the counters' device):
- in the Triton kernels, in-kernel (`tl.rand`): the fused ops on a GPU never materialise a mask;
- CPU tensors: the C++ generator of vlbert_fast._C (csrc/philox_cpu.cpp): 6 ns per element on one core, about
  torch.rand's speed (4 ns), where the plain-PyTorch twin takes 250 ns (10 rounds of 32-bit products spelled in
  about 120 int64 tensor ops; measured as CPU time on 552 x 768 counters, a mask of the Base CPU step). On a busy
  machine with 2 threads each of those ops waits for both threads: issue 17 measured 3.8 s for one such mask;
- CUDA tensors outside the kernels (the references on a GPU): kernels/philox.py, tl.rand written out;
- anywhere else, or without the extension: `philox_uniform_torch`, the plain-PyTorch twin.

Reproducibility contract. The four give bitwise equal draws for the same seed and counters (tests/ops/
test_dropout_random.py checks the C++ generator and the Triton kernel, under the interpreter, against the twin, and
the twin against Random123's known answers), so a seed selects the same dropout mask on every backend and device:
the embedding and residual-LayerNorm masks of the reference on a CPU are those of the Triton kernels on a GPU. A seed
is an int or a one-element int64 tensor; the ops draw each call's seed, when none is given, as a tensor on the inputs'
device from that device's generator (ops/library.py `dropout_seed`: no host sync, and a fresh key per CUDA-graph
replay), so `torch.manual_seed` fixes every mask of a run on any device; on a CPU the draw is the one the CPU
generator always gave. A GPU run draws its keys from the CUDA generator, so its masks are not a CPU run's.
What stays out of this contract: attention dropout through SDPA or flash-attn (their own generators;
ops/attention.py), the visual branch's nn.Dropout (torch's generator of the device), and the values around the mask
(the backends agree within the ops' tolerances, not bitwise).
"""

from __future__ import annotations

import torch

from .. import _ext

MAX_COUNTER = 2**31
"""Dropout counters (offset + N*H) stay below this: tl.rand takes the 32-bit Philox path for int32 counters."""

_PHILOX_KEY = (0x9E3779B9, 0xBB67AE85)
_PHILOX_ROUND = (0xD2511F53, 0xCD9E8D57)
_MASK32 = 0xFFFFFFFF
_TO_UNIT = 4.6566127342e-10  # 1 / (2**31 - 1) rounded, as tl.rand scales


def _mul_hi_lo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32 bits of a * b for a 32-bit constant a and 32-bit values b in int64, without overflowing int64
    (b split into 16-bit halves, so every partial product stays below 2**49)."""
    lo_part = a * (b & 0xFFFF)
    hi_part = a * (b >> 16)
    return (hi_part + (lo_part >> 16)) >> 16, (((hi_part & 0xFFFF) << 16) + lo_part) & _MASK32


def philox_4x32(
    counter: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], key: tuple[int, int], rounds: int = 10
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox-4x32 on int64 tensors holding 32-bit words: the bijection of `counter` under `key`, as Random123 and
    Triton's tl.randint4x define it."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(rounds):
        hi_b, lo_b = _mul_hi_lo(_PHILOX_ROUND[1], c2)
        hi_a, lo_a = _mul_hi_lo(_PHILOX_ROUND[0], c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + _PHILOX_KEY[0]) & _MASK32, (k1 + _PHILOX_KEY[1]) & _MASK32
    return c0, c1, c2, c3


def _check_seed(seed: int) -> None:
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed: expected an integer in [0, 2**63), found {seed}")


def _key_words(seed: int | torch.Tensor) -> tuple:
    """The Philox key (low word, high word) of a seed given as an int or a one-element int64 tensor."""
    if isinstance(seed, torch.Tensor):
        seed = seed.reshape(()).to(torch.int64)
        return seed & _MASK32, (seed >> 32) & _MASK32
    _check_seed(seed)
    return seed & _MASK32, (seed >> 32) & _MASK32


def philox_uniform_torch(seed: int | torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """The plain-PyTorch twin of `tl.rand(seed, counters)` (module docstring): int64 tensor ops on any device. `seed`
    an int, or a one-element int64 tensor on the counters' device (read there, never on the host). A tensor seed
    traces under torch.compile (the ops pass their device keys so); an int seed runs eagerly (`_uniform_int_seed`)."""
    if isinstance(seed, torch.Tensor):
        return _uniform(seed, counters)
    return _uniform_int_seed(seed, counters)


# An int seed is never traced by torch.compile: each call brings a new seed, which Dynamo then makes a symbolic
# integer, and Inductor's C++ code generation (torch 2.13, CPU) types the int64 bitwise arithmetic on it as float and
# fails to compile ("invalid operands of types 'float' and 'float' to binary 'operator^'", issue 21; tests/ops/
# test_dropout_random.py). Run eagerly inside a compiled model, the twin gives the same draws. torch's lazy form of
# torch.compiler.disable: the public one imports Dynamo, and with it Triton, when this module is imported, before
# `vlbert-fast bench` on a CPU has set TRITON_INTERPRET (Triton's own jit functions then fail inside the interpreter).
@torch._disable_dynamo
def _uniform_int_seed(seed: int, counters: torch.Tensor) -> torch.Tensor:
    return _uniform(seed, counters)


def _uniform(seed: int | torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    c0 = counters.to(torch.int64) & _MASK32
    zero = torch.zeros_like(c0)
    word, _, _, _ = philox_4x32((c0, zero, zero, zero), _key_words(seed))
    signed = torch.where(word >= 2**31, word - 2**32, word)
    folded = torch.where(signed < 0, -signed - 1, signed)
    return folded.to(torch.float32) * torch.tensor(_TO_UNIT, dtype=torch.float32, device=counters.device)


def _native_generator():
    """vlbert_fast._C's philox_uniform, or None (no extension, or one built before it had the function)."""
    ext = _ext.load()
    return getattr(ext, "philox_uniform", None) if ext is not None else None


def philox_uniform(seed: int | torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """fp32 draws equal to `tl.rand(seed, counters)` for int32 counters, made where the counters live (module
    docstring): the C++ generator on a CPU, the Triton kernel on a GPU, else the PyTorch twin. `seed` is an int or a
    one-element int64 tensor on the counters' device (the ops' dropout keys, ops/library.py `dropout_seed`); a CPU
    key is read as an int for the C++ generator (no device involved), a GPU key stays on the GPU."""
    if isinstance(seed, torch.Tensor):
        if seed.dtype != torch.int64 or seed.numel() != 1:
            raise ValueError(f"seed: expected a one-element int64 tensor, found {seed.dtype} {tuple(seed.shape)}")
    else:
        _check_seed(seed)
    if (
        counters.device.type == "cpu"
        and counters.dtype in (torch.int64, torch.int32)
        and not torch.compiler.is_compiling()
    ):
        # (traced by torch.compile, the twin below: Dynamo cannot trace into the extension, and the twin compiles
        # bitwise under Inductor, tests/model/test_compiled_step.py)
        native = _native_generator()
        if native is not None and (not isinstance(seed, torch.Tensor) or seed.device.type == "cpu"):
            return native(int(seed), counters)
    if counters.device.type == "cuda":
        from .dispatch import triton_import_error

        if triton_import_error() is None:
            from ..kernels.philox import philox_uniform_triton

            return philox_uniform_triton(seed, counters)
    return philox_uniform_torch(seed, counters)


def dropout_counters(offset: int, n: int, hidden: int, device: torch.device) -> torch.Tensor:
    """[N, H] int64 Philox counter of each element: offset + n * H + h."""
    return offset + torch.arange(n * hidden, device=device, dtype=torch.int64).view(n, hidden)
