"""Launch heuristics shared by the Triton kernels: block sizes, warp counts, the largest fused row, persistent grid
sizes, and the autotune reduction the interpreter needs. Every choice carries its reason.

Import from `vlbert_fast.ops`, not directly: the ops check first that Triton can run the inputs at all.
"""

from __future__ import annotations

import functools
import os

import torch
import triton

from .interpreter import interpreter_on

# ---------------------------------------------------------------------------------------------------------------------
# environment


def autotune_configs(configs: list[triton.Config]) -> list[triton.Config]:
    """All configs on a GPU; the first only under the interpreter, where autotuning more than one config fails
    ("0 active drivers") and timing NumPy would pick nothing meaningful anyway."""
    return configs[:1] if interpreter_on() else configs


@functools.lru_cache(maxsize=8)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


PERSISTENT_CTAS_PER_SM = {"layer_norm_backward": 2, "bias_gelu_backward": 2, "embedding_backward": 1}
"""CTAs per SM that each persistent launch sizes its grid for (kernels that loop over rows and keep per-program
partial sums), the one place the assumption lives: `persistent_programs` sizes grids by it,
`persistent_max_registers` caps the kernel's registers (Triton's maxnreg) so that it holds, and the static sm_90
scorecard fails when a kernel's ctas_per_sm falls below it (benchmarks/results/sm90_static.md).
- LayerNorm and GELU backward: 2 (16 warps per SM), so one CTA's reductions and stores overlap the other's loads.
  The LayerNorm backward with dropout needed 168 registers at 8 warps (one CTA per SM, two waves); capped at 128 it
  spills nothing.
- Embedding backward: 1 CTA of 8 warps. Its per-program sums of the small tables take 167-177 registers; capped at
  128 (two CTAs) it spills 24-36 bytes per thread and issues 8% more instructions, and 16 warps (2 elements per
  thread) cost 60% more instructions in the row reductions. Which of the three is fastest is a GPU measurement,
  owed; one wave of one CTA is what fits without spilling."""

SM_REGISTERS = 65536
"""32-bit registers per SM on sm_80/sm_90 (CUDA C Programming Guide, compute capabilities)."""


def persistent_programs(rows: int, device: torch.device, per_sm: int, columns: int = 1) -> int:
    """Programs along the row axis for a kernel that loops over rows and keeps per-program partial sums.

    On a GPU: `per_sm` CTAs per SM in all, where each program is `columns` CTAs (a grid of [programs, columns]), so
    every SM is busy in a single wave and the partial-sum buffers ([programs, H] per small table) stay a few MB at
    most. Under the interpreter: 3, so tests still exercise the partial-sum reduction across programs while paying
    the per-program overhead only a few times.
    """
    if rows <= 0:
        return 0
    if device.type == "cuda":
        slots = per_sm * _sm_count(device.index if device.index is not None else 0)
        return max(1, min(rows, slots // max(columns, 1)))
    return min(rows, 3)


def persistent_max_registers(num_warps: int, per_sm: int) -> int:
    """Registers per thread (Triton's `maxnreg`) at which `per_sm` CTAs of `num_warps` warps fit one SM's register
    file: 128 for 8 warps at 2 CTAs. Registers are allocated in units of 8 per thread; 255 is the hardware cap."""
    return min(255, SM_REGISTERS // (per_sm * num_warps * 32) // 8 * 8)


# ---------------------------------------------------------------------------------------------------------------------
# row kernels (one hidden vector per program step)

MAX_FUSED_HIDDEN = 8192
"""Largest hidden size a row kernel holds in registers. The embedding backward keeps about 20 fp32 vectors of
BLOCK_H live (the row, its gradients, the region row and the per-program sums of the small tables); ptxas for sm_90
reports no spills up to BLOCK_H = 1024, a few bytes at 2048, about 1.5 KB per thread at 4096 and 3 KB at 8192 (slow
but correct); beyond 8192, use the reference."""


def row_block(hidden: int) -> int:
    """BLOCK_H for a row kernel: the whole row in one block (power of two for tl.arange)."""
    if hidden > MAX_FUSED_HIDDEN:
        raise ValueError(
            f"hidden size {hidden} is larger than the fused kernels' maximum {MAX_FUSED_HIDDEN}; "
            "use backend='reference'"
        )
    return triton.next_power_of_2(max(hidden, 16))


def row_warps(block: int) -> int:
    """Warps for a row of `block` elements: at least 4 elements per thread so loads vectorise (16 bytes of fp32),
    at most 16 warps so a program's reductions stay within one SM's fast shared memory."""
    if block >= 8192:
        return 16
    if block >= 2048:
        return 8
    if block >= 512:
        return 4
    return 2


def accumulating_row_warps(block: int) -> int:
    """Warps for a row kernel that also keeps per-program sums in registers (the embedding backward): 4 elements
    per thread. ptxas for sm_90: 153 registers at 4 elements per thread and no spills; at 8 per thread it hits
    the 255-register cap (BLOCK_H 1024 with 4 warps), and spills beyond."""
    return max(2, min(16, block // 128))


# ---------------------------------------------------------------------------------------------------------------------
# tile kernels (a block of rows x a block of columns)


def tile_rows(columns: int, elements: int = 4096) -> int:
    """Rows per program for a tile of `columns` columns: the largest power of two (for tl.arange) that keeps a tile
    near `elements` elements, enough work per program to hide memory latency without leaving the last program mostly
    masked. Under the interpreter the cost is per program, so the same rule keeps the program count low there too."""
    quotient = max(1, elements // max(columns, 1))
    return 1 << (quotient.bit_length() - 1)


# ---------------------------------------------------------------------------------------------------------------------
# attention (kernels/attention.py)

MAX_ATTENTION_HEAD_DIM = 128
"""Largest head dimension of the Triton attention kernels. The backward's key-block program holds K, V, dK and dV
tiles of BLOCK_N x BLOCK_D in registers; at BLOCK_D = 256 they no longer fit next to the score tiles without
spilling (flash-attn's own kernels go to 256 with hand-tuned shared-memory layouts)."""


def attention_head_block(head_dim: int) -> int:
    """BLOCK_D: the head dimension padded to a power of two (tl.arange) and at least 16 (the smallest tl.dot
    operand); the padded columns are loaded as zeros, so 80 and 96 run as 128 with their extra columns masked."""
    if head_dim > MAX_ATTENTION_HEAD_DIM:
        raise ValueError(
            f"head dimension {head_dim} is larger than the Triton attention kernels' maximum {MAX_ATTENTION_HEAD_DIM}"
        )
    return max(16, triton.next_power_of_2(head_dim))


SHORT_ROWS = 64
"""Rows up to this many tokens (VL-BERT's shortest samples) tune among tiles of at most 64 queries: a 128-query tile
would leave half its rows idle."""

# (kernel, operand family, head block > 64) -> (tiles for rows <= SHORT_ROWS, tiles for longer rows), each a list of
# (BLOCK_M queries, BLOCK_N keys, warps, stages). Chosen from the static sm_90 scorecard (benchmarks/results/
# sm90_static.md): the fewest warp instructions per score element among the tiles that neither spill (with and
# without dropout) nor pay more than 1.7x for dropout, then the most CTAs per SM; a second tile only where the first
# leaves an SM at one or two CTAs. The dK/dV kernel keeps four [keys, head dim] tiles live, so it gets one tile.
# Two pipeline stages: rows of 64-256 tokens give a 64-key loop 1-4 iterations, which a third stage would never fill
# (it costs shared memory, not instructions). Tiles are whole dropout draws (16 x 32, kernels/attention_common.py).
# fp32 "ieee" products run on FMA units, whose dot operands live in registers (Triton keeps each operand's whole
# reduction dimension per thread): the forward and dQ kernels reload their queries (and dO) every key block instead
# of holding them (they spilled 0.1-2.5 KB at every tile while held, 63-162 registers now), and only 8-warp tiles of
# 16-64 queries x 32 keys fit without spilling.
ATTENTION_TILES = {
    ("fwd", "16bit", False): ([(64, 64, 4, 2)], [(128, 64, 8, 2), (64, 64, 4, 2)]),
    ("fwd", "16bit", True): ([(64, 64, 4, 2)], [(128, 64, 8, 2), (64, 64, 4, 2)]),
    ("fwd", "tf32", False): ([(64, 64, 4, 2)], [(64, 64, 4, 2), (128, 64, 8, 2)]),
    ("fwd", "tf32", True): ([(64, 32, 4, 1)], [(64, 32, 4, 1), (128, 64, 8, 2)]),
    ("fwd", "ieee", False): ([(64, 32, 8, 1)], [(64, 32, 8, 1)]),
    ("fwd", "ieee", True): ([(16, 32, 8, 1)], [(16, 32, 8, 1)]),
    ("dkdv", "16bit", False): ([(64, 64, 4, 2)], [(64, 64, 4, 2)]),
    ("dkdv", "16bit", True): ([(32, 64, 4, 1)], [(32, 64, 4, 1)]),
    ("dkdv", "tf32", False): ([(32, 64, 4, 1)], [(32, 64, 4, 1)]),
    ("dkdv", "tf32", True): ([(32, 64, 4, 1)], [(32, 64, 4, 1)]),
    ("dkdv", "ieee", False): ([(16, 32, 4, 1)], [(16, 32, 4, 1)]),
    ("dkdv", "ieee", True): ([(16, 32, 8, 1)], [(16, 32, 8, 1)]),
    ("dq", "16bit", False): ([(64, 64, 4, 2), (64, 32, 4, 1)], [(64, 64, 4, 2), (128, 64, 8, 2)]),
    ("dq", "16bit", True): ([(64, 64, 4, 2), (64, 32, 4, 1)], [(64, 64, 4, 2), (128, 64, 8, 2)]),
    ("dq", "tf32", False): ([(64, 64, 4, 2), (64, 32, 4, 1)], [(64, 64, 4, 2), (128, 64, 8, 2)]),
    ("dq", "tf32", True): ([(128, 32, 8, 2)], [(128, 32, 8, 2)]),
    ("dq", "ieee", False): ([(64, 32, 8, 1)], [(64, 32, 8, 1)]),
    ("dq", "ieee", True): ([(16, 32, 8, 1)], [(16, 32, 8, 1)]),
}


def _tile_config(tile: tuple[int, int, int, int]) -> triton.Config:
    m, n, warps, stages = tile
    return triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=warps, num_stages=stages)


def attention_configs(kind: str) -> list[triton.Config]:
    """Autotune candidates of an attention kernel (kind "fwd", "dkdv" or "dq"): every tile of ATTENTION_TILES for
    it; `prune_attention_configs` keeps the ones for the inputs at hand (at most two).

    Under the interpreter: one config of 16 x 32, the smallest tile of whole dropout draws (16 queries x 32 keys per
    Philox call, kernels/attention_common.py), so short test sequences still span several blocks."""
    if interpreter_on():
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 32}, num_warps=1, num_stages=1)]
    tiles = dict.fromkeys(t for (k, _, _), lists in ATTENTION_TILES.items() if k == kind for ts in lists for t in ts)
    return [_tile_config(t) for t in tiles]


def attention_tiles(kind: str, dtype: torch.dtype, precision: str, block_d: int, seq_bucket: int) -> list[tuple]:
    """The tiles the autotuner tries for these inputs (ATTENTION_TILES)."""
    family = precision if dtype == torch.float32 else "16bit"
    short, long = ATTENTION_TILES[(kind, family, block_d > 64)]
    return short if seq_bucket <= SHORT_ROWS else long


def prune_attention_configs(kind: str):
    """The autotuner's early pruning for one kernel kind: the configs of `attention_tiles` (all of them under the
    interpreter, which has one)."""

    def prune(configs, named_args, **kwargs):
        if interpreter_on():
            return configs
        dtype = named_args["q_ptr"].dtype
        wanted = attention_tiles(kind, dtype, kwargs["DOT_PRECISION"], kwargs["BLOCK_D"], kwargs["seq_bucket"])
        if os.environ.get("VLBERT_FAST_AUTOTUNE") == "first":
            # correctness runs (gpu_check.sh's GPU tests): the preferred tile only, no 1-2 s JIT of a config that
            # would lose the race
            wanted = wanted[:1]
        keep = [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) in wanted]
        return sorted(keep, key=lambda c: wanted.index((c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps,
                                                         c.num_stages)))  # fmt: skip

    return prune


def sequence_bucket(max_seqlen: int) -> int:
    """Autotune key for the sequence length: the next power of two, so a training run whose longest sample changes
    every batch tunes once per bucket instead of once per length."""
    return triton.next_power_of_2(max(max_seqlen, 1))
