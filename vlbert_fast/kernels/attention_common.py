"""Pieces the attention kernels share (kernels/attention.py, kernels/attention_bwd.py): which rows a program owns, a
tile load that masks only where it must, the dropout mask, and the scalar arguments every attention kernel takes.

Dropout draws (the specification is `attention_dropout_keep` in ops/attention.py, which reproduces them in PyTorch):
an element of the score tile of head h is (query i, key j), both positions within their sequence, whose first token
is `start` in the packed stream of T tokens. Write i = 16a + 8h' + r (r < 8, h' < 2) and j = 32g + 8w + 2c + d
(c < 4, w < 4, d < 2). The element is kept when byte 2h' + d (least significant first) of word w of

    Philox-4x32-7(key = seed, counter = (offset + (h T + start + 16a + r) max_seqlen + 32g + 2c, 0, 0, 0))

is at least `threshold` = round(256 p), at most 255; kept elements are scaled by 256 / (256 - threshold). So the
probability is realised in steps of 1/256, with 7 Philox rounds, as in FlashAttention-2's own CUDA kernels, and one
Philox call serves 16 elements: the dropout loops cost 1.4-1.7x the instructions of the loops without it
(benchmarks/results/sm90_static.md), where one Philox-4x32-10 per element (tl.rand) cost 5.4x. Those 16 are (i, i +
8) x (j, j + 1, j + 8, j + 9, ..., j + 24, j + 25) for i, j with bits 3 (and 0, 3, 4 of j) clear: the elements one
thread holds in the tensor-core accumulator layouts (mma.sync and wgmma both give a thread rows r and r + 8 and the
column pair 2c, 2c + 1 of every 8 columns), so the draws never move between threads. Every kernel computes the score
tile as queries x keys, so the forward and both backward kernels draw the identical mask from the same code.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .philox import seed_pointer
from .utils import attention_head_block, sequence_bucket

LOG2_E = 1.4426950408889634  # exp(x) = exp2(x * log2(e))


PHILOX_ROUNDS: tl.constexpr = tl.constexpr(7)  # FlashAttention-2's dropout; Philox-4x32-7 passes BigCrush
PHILOX_ROUND_A: tl.constexpr = tl.constexpr(0xD2511F53)  # Salmon et al. 2011, Philox-4x32's multipliers
PHILOX_ROUND_B: tl.constexpr = tl.constexpr(0xCD9E8D57)
PHILOX_KEY_A: tl.constexpr = tl.constexpr(0x9E3779B9)  # and its key schedule (golden ratio, sqrt(3) - 1)
PHILOX_KEY_B: tl.constexpr = tl.constexpr(0xBB67AE85)


@triton.jit
def _philox(
    seed,  # int64 scalar key (low word, high word)
    counter,  # int32 tensor: the counter's first word; the other three are 0
):
    """Philox-4x32 with PHILOX_ROUNDS rounds (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC
    2011) on the counter (counter, 0, 0, 0): `tl.randint4x` at 7 rounds. Written out because each round's two
    32 x 32 -> 64-bit products are one instruction each this way (IMAD.WIDE.U32) where umulhi and the low multiply
    are two."""
    seed = seed.to(tl.uint64)
    k0 = (seed & 0xFFFFFFFF).to(tl.uint32)
    k1 = ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32)
    c0 = counter.to(tl.uint32, bitcast=True)
    zero = c0 * 0
    c1 = zero
    c2 = zero
    c3 = zero
    for _ in tl.static_range(PHILOX_ROUNDS):
        product_b = c2.to(tl.uint64) * PHILOX_ROUND_B
        product_a = c0.to(tl.uint64) * PHILOX_ROUND_A
        c0 = (product_b >> 32).to(tl.uint32) ^ c1 ^ k0
        c2 = (product_a >> 32).to(tl.uint32) ^ c3 ^ k1
        c1 = product_b.to(tl.uint32)
        c3 = product_a.to(tl.uint32)
        k0 = k0 + PHILOX_KEY_A
        k1 = k1 + PHILOX_KEY_B
    return c0, c1, c2, c3


@triton.jit
def _dropout_keep(
    rng_base,  # int32 scalar: offset + (head * T + start) * max_seqlen
    row0,  # int32: first query of the tile within its sequence, a multiple of 16
    col0,  # int32: first key of the tile within its sequence, a multiple of 32
    max_seqlen,  # counter stride of a query row
    keep_threshold,  # int32 in [1, 255]: a byte draw >= this keeps its element
    seed,  # Philox key
    BLOCK_M: tl.constexpr,  # queries (tile rows), a multiple of 16
    BLOCK_N: tl.constexpr,  # keys (tile columns), a multiple of 32
):
    """Keep mask [BLOCK_M, BLOCK_N] of the tile at (row0, col0): one Philox call per 16 elements (module
    docstring). The call's counters form a [BLOCK_M / 16, 8, BLOCK_N / 32, 4] grid (a, r, g, c); the 16 byte draws
    of each call are joined as new trailing dimensions and permuted into place, so no draw is computed twice."""
    rows = row0 + 16 * tl.arange(0, BLOCK_M // 16)[:, None] + tl.arange(0, 8)[None, :]  # [BLOCK_M/16, 8]
    cols = col0 + 32 * tl.arange(0, BLOCK_N // 32)[:, None] + 2 * tl.arange(0, 4)[None, :]  # [BLOCK_N/32, 4]
    counter = rng_base + rows[None, :, :, None] * max_seqlen + cols[:, None, None, :]  # [g, a, r, c]
    w0, w1, w2, w3 = _philox(seed, counter)
    # Each byte shifted to the top of its word compares against the threshold shifted there too (unsigned):
    # (word << 8 * (3 - k)) >= threshold << 24 exactly when byte k >= threshold. Joins add trailing dimensions
    # (d, h') per word, then (w mod 2, w div 2) across the words.
    draws = tl.join(
        tl.join(tl.join(tl.join(w0 << 24, w0 << 16), tl.join(w0 << 8, w0)),
                tl.join(tl.join(w1 << 24, w1 << 16), tl.join(w1 << 8, w1))),
        tl.join(tl.join(tl.join(w2 << 24, w2 << 16), tl.join(w2 << 8, w2)),
                tl.join(tl.join(w3 << 24, w3 << 16), tl.join(w3 << 8, w3))),
    )  # [g, a, r, c, d, h', w mod 2, w div 2]  # fmt: skip
    draws = tl.reshape(tl.permute(draws, 1, 5, 2, 0, 7, 6, 3, 4), BLOCK_M, BLOCK_N)
    return draws >= keep_threshold.to(tl.uint32) << 24


@triton.jit
def _sequence_block(
    cu_seqlens_ptr,  # [B+1] int32
    max_seqlen,  # blocks per sequence = cdiv(max_seqlen, BLOCK)
    BLOCK: tl.constexpr,  # rows per block along grid axis 0
):
    """(first token int64, length int32, block index int32) of this program's (sequence, block) pair. Offsets
    within a sequence stay int32 (the host checks max_seqlen x token stride < 2**31); only the per-program base
    pointers are 64-bit, which keeps the tiles' address registers at half the width."""
    pid = tl.program_id(0).to(tl.int64)
    num_blocks = tl.cdiv(max_seqlen, BLOCK)
    seq = pid // num_blocks
    start = tl.load(cu_seqlens_ptr + seq)
    seqlen = tl.load(cu_seqlens_ptr + seq + 1) - start
    return start.to(tl.int64), seqlen, (pid % num_blocks).to(tl.int32)


@triton.jit
def _load_rows(
    ptr,  # the tensor's base for this sequence and head: row r is at ptr + r * stride
    rows,  # [R] int32 row positions within the sequence
    offs_d,  # [BLOCK_D] int32
    stride,  # row stride
    seqlen,  # rows at or past it read as zeros (MASK_ROWS)
    d_valid,  # [BLOCK_D] offs_d < head_dim (MASK_D)
    MASK_ROWS: tl.constexpr,  # the tile may reach past the sequence's end
    MASK_D: tl.constexpr,  # the head dimension is not a power of two (padded columns read as zeros)
):
    """A [R, BLOCK_D] tile, masked only where a row or column can be out of range: full key blocks load without
    predicates."""
    ptrs = ptr + rows[:, None] * stride + offs_d[None, :]
    if MASK_ROWS:
        if MASK_D:
            tile = tl.load(ptrs, mask=(rows < seqlen)[:, None] & d_valid[None, :], other=0.0)
        else:
            tile = tl.load(ptrs, mask=(rows < seqlen)[:, None], other=0.0)
    elif MASK_D:
        tile = tl.load(ptrs, mask=d_valid[None, :], other=0.0)
    else:
        tile = tl.load(ptrs)
    return tile


def last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    """The kernels take any token and head strides (q, k, v as views of one fused QKV projection) but need the
    head dimension contiguous."""
    return t if t.stride(-1) == 1 else t.contiguous()


def launch_args(q: torch.Tensor, max_seqlen: int, softmax_scale: float, keep_threshold: int, seed,
                offset: int, precision: str) -> dict:  # fmt: skip
    """The scalar and constexpr arguments every attention kernel takes, by name. `keep_threshold` 0 is no dropout;
    `precision` ("tf32" or "ieee") picks fp32 inputs' dot precision (16-bit inputs always use their tensor cores)."""
    head_dim = q.shape[2]
    block_d = attention_head_block(head_dim)
    return dict(
        total=q.shape[0],
        head_dim=head_dim,
        max_seqlen=max_seqlen,
        seq_bucket=sequence_bucket(max_seqlen),
        qk_scale=softmax_scale * LOG2_E,
        keep_threshold=keep_threshold,
        seed_ptr=seed_pointer(seed, q.device),
        rng_offset=offset,
        BLOCK_D=block_d,
        MASK_D=head_dim != block_d,
        HAS_DROPOUT=keep_threshold > 0,
        DOT_PRECISION=precision if q.dtype == torch.float32 else "tf32",
    )
