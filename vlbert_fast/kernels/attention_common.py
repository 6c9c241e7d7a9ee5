"""Pieces the attention kernels share (kernels/attention.py, kernels/attention_bwd.py): which rows a program owns, a
tile load that masks only where it must, the dropout mask, and the scalar arguments every attention kernel takes.

Dropout draws (the specification is `attention_dropout_keep` in ops/attention.py, which reproduces them in PyTorch):
an element of the score tile of head h is (query i, key j), both positions within their sequence, whose first token
is `start` in the packed stream of T tokens. Write i = 16a + 8h' + r (r < 8, h' < 2) and j = 32g + 8w + 2c + d
(c < 4, w < 4, d < 2). The element is kept when byte 2h' + d (least significant first) of word w of

    Philox-4x32-7(key = seed, counter = (offset + (h T + start + 16a + r) max_seqlen + 32g + 2c, 0, 0, 0))

is at least `threshold` = round(256 p), at most 255; kept elements are scaled by 256 / (256 - threshold). So the
probability is realised in steps of 1/256, with 7 Philox rounds, as in FlashAttention-2's own CUDA kernels, and one
Philox call serves 16 elements. Those 16 are (i, i + 8) x (j, j + 1, j + 8, j + 9, ..., j + 24, j + 25) for i, j with
bits 3 (and 0, 3, 4 of j) clear: the elements one thread holds in the tensor-core accumulator layouts (mma.sync and
wgmma both give a thread rows r and r + 8 and the column pair 2c, 2c + 1 of every 8 columns its warp holds), so
where a warp holds 32 consecutive keys the draws never move between threads (the 32-query dK/dV tiles, whose warps
each hold 8 of them, exchange words through shared memory: _dropout_draws). Every kernel computes the score tile as
queries x keys, so the forward and both backward kernels draw the identical mask from the same code.

Applying the mask: compiled kernels with 16-bit inputs compare two bytes at once in PTX (DROPOUT_PAIRS_PTX,
DROPOUT_SELECT_PTX below); the interpreter and fp32 inputs compare each byte shifted to the top of its word and
select. With the PTX, dropout costs the bf16 loops 1.27-1.50x the instructions of the loops without it, against
1.37-1.68x before (benchmarks/results/sm90_static.md); one Philox-4x32-10 per element (tl.rand) cost 5.4x.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .interpreter import interpreter_on
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
def _dropout_draws(
    rng_base,  # int32 scalar: offset + (head * T + start) * max_seqlen
    row0,  # int32: first query of the tile within its sequence, a multiple of 16
    col0,  # int32: first key of the tile within its sequence, a multiple of 32
    max_seqlen,  # counter stride of a query row
    seed,  # Philox key
    BLOCK_M: tl.constexpr,  # queries (tile rows), a multiple of 16
    BLOCK_N: tl.constexpr,  # keys (tile columns), a multiple of 32
    AT_TOP: tl.constexpr,  # each element's byte moved to the top of its word; else the word as drawn
):
    """[BLOCK_M, BLOCK_N] uint32, for each element of the tile at (row0, col0) the Philox word that holds its byte
    draw: one Philox call per 16 elements (module docstring). The call's counters form a [BLOCK_M / 16, 8,
    BLOCK_N / 32, 4] grid (a, r, g, c); the call's four words are joined as two new trailing dimensions, then each
    word is repeated (or shifted, AT_TOP) for its four bytes by two more joins, and all is permuted into place, so
    no draw is computed twice. Words before bytes: where a tile's warps split a call's 32 keys (the 32-query dK/dV
    tiles, mma.sync with the warps side by side across the keys) the layout conversion then moves a thread's 4 words
    through shared memory rather than their 16 copies. Head dim 128, bf16: 0.80 instructions per score element (6
    shared-memory stores, 6 loads and 6 barriers more per loop than without dropout), where the bytes joined first
    spilled and a call computed by each warp that needs a word of it (_dropout_draws_by_element) cost 0.97."""
    rows = row0 + 16 * tl.arange(0, BLOCK_M // 16)[:, None] + tl.arange(0, 8)[None, :]  # [BLOCK_M/16, 8]
    cols = col0 + 32 * tl.arange(0, BLOCK_N // 32)[:, None] + 2 * tl.arange(0, 4)[None, :]  # [BLOCK_N/32, 4]
    counter = rng_base + rows[None, :, :, None] * max_seqlen + cols[:, None, None, :]  # [g, a, r, c]
    w0, w1, w2, w3 = _philox(seed, counter)
    words = tl.join(tl.join(w0, w1), tl.join(w2, w3))  # [g, a, r, c, w mod 2, w div 2]
    if AT_TOP:  # byte 2h' + d to the top: shifted by 8 (1 - d), then by 16 (1 - h')
        draws = tl.join(words << 8, words)
        draws = tl.join(draws << 16, draws)
    else:
        draws = tl.join(words, words)
        draws = tl.join(draws, draws)  # [g, a, r, c, w mod 2, w div 2, d, h']
    return tl.reshape(tl.permute(draws, 1, 7, 2, 0, 5, 4, 3, 6), BLOCK_M, BLOCK_N)


@triton.jit
def _dropout_draws_by_element(rng_base, row0, col0, max_seqlen, seed, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """What `_dropout_draws(..., AT_TOP=True)` returns, computed in the tile's own layout: each element's counter and
    word from its indices, the Philox calls that elements of one thread share computed once (LLVM merges them), none
    moved between threads; a call is computed by each warp that needs some of its words. For the FMA ("ieee") dK/dV
    tiles of 16 queries (fp32, so never the PTX masks), where it measured better than the joined words (hd64: 4 CTAs
    per SM against 2; hd128: 21.9 against 22.3 instructions per element)."""
    i = tl.arange(0, BLOCK_M)[:, None]
    j = tl.arange(0, BLOCK_N)[None, :]
    counter = rng_base + (row0 + (i & ~8)) * max_seqlen + col0 + (j & ~0b11001)
    w0, w1, w2, w3 = _philox(seed, counter)
    w = (j >> 3) & 3
    word = tl.where(w == 0, w0, tl.where(w == 1, w1, tl.where(w == 2, w2, w3)))
    byte = 2 * ((i >> 3) & 1) + (j & 1)
    return word << (8 * (3 - byte)).to(tl.uint32)


@triton.jit
def _dropout_keep(rng_base, row0, col0, max_seqlen, keep_threshold, seed, BLOCK_M: tl.constexpr,
                  BLOCK_N: tl.constexpr):  # fmt: skip
    """Keep mask [BLOCK_M, BLOCK_N] of the tile at (row0, col0) (`_dropout_draws`; keep_threshold in [1, 255]): the
    byte at the top of its word compares against the threshold shifted there too (unsigned), so
    (word << 8 * (3 - k)) >= threshold << 24 exactly when byte k >= threshold."""
    draws = _dropout_draws(rng_base, row0, col0, max_seqlen, seed, BLOCK_M, BLOCK_N, True)
    return draws >= keep_threshold.to(tl.uint32) << 24


# Compiled kernels with 16-bit inputs apply the mask in PTX, four elements per asm statement (pack=4): the four
# that a tensor-core accumulator layout (mma.sync and wgmma alike) gives one thread in consecutive registers, (r, 2c),
# (r, 2c + 1), (r + 8, 2c), (r + 8, 2c + 1), whose draws are bytes 0-3 of one Philox word (module docstring). The
# word ($ after the values; its four copies are one register) goes into two registers of two 16-bit halves, one byte
# each (PRMT with a zero: halves b0 | b1 << 16 and b2 | b3 << 16); a half 0x00bb read as an fp16 (subnormal, no
# flush) is ordered as the byte is, so one fp16x2 comparison with the threshold in both halves decides two elements.
# FlashAttention-2's CUDA kernels mask their 16-bit values the same way (benchmarks/results/sm90_peer_flash.md).
# The interpreter runs no PTX: tests/kernels/test_attention_dropout_ptx.py runs these statements' arithmetic on every
# byte and threshold, and the scorecard (benchmarks/sm90_static.py, inline_asm) checks that the compiled kernels give
# them their operands in a tensor-core layout.

# Four bf16/fp16 values, two per register ($2: row r, $3: row r + 8), masked in pairs: HSET2 gives 0xFFFF (keep) or 0
# per half, an AND applies it. Three instructions per two elements, where a compare and a select cost four.
DROPOUT_PAIRS_PTX: tl.constexpr = tl.constexpr("""{
.reg .b32 lo, hi;
prmt.b32 lo, $4, 0, 0x4140;
prmt.b32 hi, $4, 0, 0x4342;
set.ge.u32.f16x2 lo, lo, $8;
set.ge.u32.f16x2 hi, hi, $8;
and.b32 $0, $2, lo;
and.b32 $1, $3, hi;
}""")

# Four 32-bit values ($4-$7) kept or zeroed: ptxas turns each two fp16 comparisons into one HSETP2 that sets two
# predicates, and a select per element follows (two instructions per element with the PRMT, where the byte's shift,
# a compare and a select cost 2.75).
DROPOUT_SELECT_PTX: tl.constexpr = tl.constexpr("""{
.reg .b32 lo, hi;
.reg .f16 b0, b1, b2, b3, t, u;
.reg .pred k0, k1, k2, k3;
prmt.b32 lo, $8, 0, 0x4140;
prmt.b32 hi, $8, 0, 0x4342;
mov.b32 {b0, b1}, lo;
mov.b32 {b2, b3}, hi;
mov.b32 {t, u}, $12;
setp.ge.f16 k0, b0, t;
setp.ge.f16 k1, b1, t;
setp.ge.f16 k2, b2, t;
setp.ge.f16 k3, b3, t;
selp.b32 $0, $4, 0, k0;
selp.b32 $1, $5, 0, k1;
selp.b32 $2, $6, 0, k2;
selp.b32 $3, $7, 0, k3;
}""")


@triton.jit
def _dropout_zero_pairs(p, words, keep_threshold):
    """`p` [BLOCK_M, BLOCK_N] (bf16 or fp16, a tensor-core accumulator layout) with the dropped elements set to 0,
    given `words` = _dropout_draws(..., AT_TOP=False): bitwise where(keep, p, 0) (DROPOUT_PAIRS_PTX)."""
    pattern = (keep_threshold * 0x10001).to(tl.uint32)  # the threshold in both halves
    return tl.inline_asm_elementwise(
        DROPOUT_PAIRS_PTX, "=r,=r,r,r,r,r,r,r,r,r,r,r", [p, words, pattern], dtype=p.dtype, is_pure=True, pack=4
    )


@triton.jit
def _dropout_select(x, words, keep_threshold):
    """`x` [BLOCK_M, BLOCK_N] fp32 in a tensor-core accumulator layout with the dropped elements set to 0, given
    `words` = _dropout_draws(..., AT_TOP=False): bitwise where(keep, x, 0) (DROPOUT_SELECT_PTX)."""
    pattern = (keep_threshold * 0x10001).to(tl.uint32)
    return tl.inline_asm_elementwise(
        DROPOUT_SELECT_PTX, "=r,=r,=r,=r,r,r,r,r,r,r,r,r,r,r,r,r", [x, words, pattern], dtype=x.dtype, is_pure=True,
        pack=4,
    )  # fmt: skip


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
        # the PTX masks assume a tensor-core accumulator layout (16-bit tiles); the interpreter and ROCm run no PTX
        PTX_DROPOUT=keep_threshold > 0
        and q.dtype != torch.float32
        and not interpreter_on()
        and torch.version.hip is None,
        DOT_PRECISION=precision if q.dtype == torch.float32 else "tf32",
    )
