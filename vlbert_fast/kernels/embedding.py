"""Fused VL-BERT embedding in Triton: gather, sum, visual and output LayerNorms, dropout in one pass per token.

The op, its arguments and its reference are specified in `vlbert_fast/ops/embedding.py`; this module holds the
kernels and their host launchers; the autograd layer is the op's custom op (ops/library.py).

Forward, one program per token: gather the position, token-type and (text and padding) word rows; add the special
row of the kind ([IMG] or the masked-RoI embedding for a RoI, [END], the text-visual embedding of a text-only row);
add the token's region row through the text or the object visual LayerNorm; LayerNorm the sum; dropout with
`tl.rand(seed, offset + n * H + h)`. Low precision is loaded, upcast once, computed in fp32 and stored once. Nothing
per token is saved: the backward recomputes the sum from the same gathers (a word row is one read of H elements,
cheaper than writing and re-reading the sum).

Backward, persistent programs that each walk a contiguous range of tokens: recompute the sum, LayerNorm backward,
then route the gradient of the sum `ds` and of the region row `dv` (the visual LayerNorm backward of `ds`):
- the small tables (token types, the four special rows, all LayerNorm weights and biases) are summed per program in
  registers and written as partial sums [programs, rows, H], added up on the host: no atomics, no contention on
  the three token-type rows that every token hits;
- the word and position tables and the region rows either take fp32 atomic adds (default: fastest, order of the
  additions varies between runs) or, with `deterministic=True`, the kernel writes `ds` and `dv` per token and
  `segment_sum` (kernels/scatter.py) adds them per destination row in token order (bitwise reproducible).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ..vocabulary import TokenKind
from .philox import seed_pointer
from .scatter import segment_sum
from .utils import (
    PERSISTENT_CTAS_PER_SM,
    accumulating_row_warps,
    persistent_max_registers,
    persistent_programs,
    row_block,
    row_warps,
)

KIND_TEXT: tl.constexpr = tl.constexpr(int(TokenKind.TEXT))
KIND_TEXT_ONLY: tl.constexpr = tl.constexpr(int(TokenKind.TEXT_ONLY))
KIND_ROI: tl.constexpr = tl.constexpr(int(TokenKind.ROI))
KIND_END: tl.constexpr = tl.constexpr(int(TokenKind.END))
KIND_PAD: tl.constexpr = tl.constexpr(int(TokenKind.PAD))

# Rows of the special table ([4, H], ops/embedding.py stacks it) and of the stacked visual LayerNorm parameters.
SPECIAL_OBJECT: tl.constexpr = tl.constexpr(0)  # [IMG]; row 1 is the masked-RoI embedding
SPECIAL_END: tl.constexpr = tl.constexpr(2)
SPECIAL_TEXT_VISUAL: tl.constexpr = tl.constexpr(3)
VISUAL_LN_TEXT: tl.constexpr = tl.constexpr(0)
VISUAL_LN_OBJECT: tl.constexpr = tl.constexpr(1)
# Rows of the backward's per-program partial sums: output LN weight, bias; visual LN weights (text, object) and
# biases (text, object); the four special rows; then the token-type rows.
PARTIAL_LN_W: tl.constexpr = tl.constexpr(0)
PARTIAL_LN_B: tl.constexpr = tl.constexpr(1)
PARTIAL_VIS_W: tl.constexpr = tl.constexpr(2)
PARTIAL_VIS_B: tl.constexpr = tl.constexpr(4)
PARTIAL_SPECIAL: tl.constexpr = tl.constexpr(6)
PARTIAL_TYPE: tl.constexpr = tl.constexpr(10)


@triton.jit
def _token_sum(
    row,  # token index (int64 scalar)
    cols,  # [BLOCK_H] column offsets
    hmask,  # [BLOCK_H] cols < hidden
    hidden,  # H
    eps,  # epsilon of the visual LayerNorms
    word_ids_ptr,  # [N] int
    position_ids_ptr,  # [N] int
    type_ids_ptr,  # [N] int
    kind_ptr,  # [N] int TokenKind
    visual_index_ptr,  # [N] int region of the token, -1 none
    region_masked_ptr,  # [K] uint8
    visual_ptr,  # [K, H] row stride stride_visual
    word_ptr,  # [V, H] row stride stride_word
    position_ptr,  # [P, H] row stride stride_position
    type_ptr,  # [T, H] row stride stride_type
    special_ptr,  # [4, H] contiguous
    visual_ln_w_ptr,  # [2, H] contiguous (text, object)
    visual_ln_b_ptr,  # [2, H] contiguous
    stride_visual,
    stride_word,
    stride_position,
    stride_type,
):
    """The pre-LayerNorm sum of one token in fp32, and what the backward needs to route its gradient."""
    kind = tl.load(kind_ptr + row)
    word = tl.load(word_ids_ptr + row).to(tl.int64)
    position = tl.load(position_ids_ptr + row).to(tl.int64)
    token_type = tl.load(type_ids_ptr + row).to(tl.int64)
    is_text = kind == KIND_TEXT
    is_roi = kind == KIND_ROI
    is_word = is_text | (kind == KIND_TEXT_ONLY) | (kind == KIND_PAD)
    has_visual = is_text | is_roi
    has_special = is_roi | (kind == KIND_END) | (kind == KIND_TEXT_ONLY)
    region = tl.where(has_visual, tl.load(visual_index_ptr + row).to(tl.int64), 0)
    masked = tl.load(region_masked_ptr + region, mask=is_roi, other=0).to(tl.int64)
    special = tl.where(is_roi, SPECIAL_OBJECT + masked, tl.where(kind == KIND_END, SPECIAL_END, SPECIAL_TEXT_VISUAL))
    vis_row = tl.where(is_roi, VISUAL_LN_OBJECT, VISUAL_LN_TEXT)

    # The reference adds in this order (position, type, word, special, visual): keep it for fp32 agreement.
    x = tl.load(position_ptr + position * stride_position + cols, mask=hmask, other=0.0).to(tl.float32)
    x += tl.load(type_ptr + token_type * stride_type + cols, mask=hmask, other=0.0).to(tl.float32)
    x += tl.load(word_ptr + word * stride_word + cols, mask=hmask & is_word, other=0.0).to(tl.float32)
    x += tl.load(special_ptr + special * hidden + cols, mask=hmask & has_special, other=0.0).to(tl.float32)

    v = tl.load(visual_ptr + region * stride_visual + cols, mask=hmask & has_visual, other=0.0).to(tl.float32)
    v_centred = tl.where(hmask, v - tl.sum(v, axis=0) / hidden, 0.0)
    v_rstd = 1.0 / tl.sqrt(tl.sum(v_centred * v_centred, axis=0) / hidden + eps)
    v_hat = v_centred * v_rstd
    v_gain = tl.load(visual_ln_w_ptr + vis_row * hidden + cols, mask=hmask, other=0.0).to(tl.float32)
    v_bias = tl.load(visual_ln_b_ptr + vis_row * hidden + cols, mask=hmask, other=0.0).to(tl.float32)
    x += tl.where(has_visual, v_hat * v_gain + v_bias, 0.0)
    return (x, v_hat, v_rstd, v_gain, word, position, token_type, region, special, vis_row, is_word, has_visual,
            has_special)  # fmt: skip


@triton.jit
def _dropout_keep(
    row,  # token index (int64 scalar)
    cols,  # [BLOCK_H]
    hidden,  # H
    dropout_p,  # probability of dropping
    seed,  # Philox key
    rng_offset,  # counter of element (0, 0); the host checks offset + N * H < 2**31
):
    """Keep mask of dropout: element (n, h) draws tl.rand(seed, offset + n * H + h) and is kept when the draw is
    >= p. The counter is int32 so tl.rand takes the same 32-bit Philox path in every Triton version; the plain
    PyTorch twin is `philox_uniform_torch` in ops/dropout.py."""
    counter = (rng_offset + row * hidden + cols).to(tl.int32)
    return tl.rand(seed, counter) >= dropout_p


@triton.jit
def _fused_embedding_fwd_kernel(
    out_ptr,  # output, [N, H] row stride stride_out
    word_ids_ptr,  # [N] int
    position_ids_ptr,  # [N] int
    type_ids_ptr,  # [N] int
    kind_ptr,  # [N] int TokenKind
    visual_index_ptr,  # [N] int
    region_masked_ptr,  # [K] uint8
    visual_ptr,  # [K, H]
    word_ptr,  # [V, H]
    position_ptr,  # [P, H]
    type_ptr,  # [T, H]
    special_ptr,  # [4, H]
    visual_ln_w_ptr,  # [2, H]
    visual_ln_b_ptr,  # [2, H]
    ln_w_ptr,  # [H] output LayerNorm weight
    ln_b_ptr,  # [H] output LayerNorm bias
    hidden,  # H
    stride_out,
    stride_visual,
    stride_word,
    stride_position,
    stride_type,
    eps,  # epsilon of all three LayerNorms
    dropout_p,  # drop probability
    dropout_scale,  # 1 / (1 - p), computed once on the host as the reference does
    seed_ptr,  # [1] int64 dropout Philox key, read on the device (no host sync; fresh per CUDA-graph replay)
    rng_offset,  # dropout counter offset
    BLOCK_H: tl.constexpr,  # next power of two >= H
    HAS_DROPOUT: tl.constexpr,  # p > 0
):
    """One token per program. LayerNorm: Ba et al. 2016; dropout: Srivastava et al. 2014 (inverted scaling)."""
    seed = tl.load(seed_ptr) if HAS_DROPOUT else 0
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_H)
    hmask = cols < hidden
    x, _, _, _, _, _, _, _, _, _, _, _, _ = _token_sum(
        row, cols, hmask, hidden, eps, word_ids_ptr, position_ids_ptr, type_ids_ptr, kind_ptr, visual_index_ptr,
        region_masked_ptr, visual_ptr, word_ptr, position_ptr, type_ptr, special_ptr, visual_ln_w_ptr,
        visual_ln_b_ptr, stride_visual, stride_word, stride_position, stride_type,
    )  # fmt: skip
    centred = tl.where(hmask, x - tl.sum(x, axis=0) / hidden, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=0) / hidden + eps)
    gain = tl.load(ln_w_ptr + cols, mask=hmask, other=0.0).to(tl.float32)
    bias = tl.load(ln_b_ptr + cols, mask=hmask, other=0.0).to(tl.float32)
    y = centred * rstd * gain + bias
    if HAS_DROPOUT:
        keep = _dropout_keep(row, cols, hidden, dropout_p, seed, rng_offset)
        y = tl.where(keep, y * dropout_scale, 0.0)
    tl.store(out_ptr + row * stride_out + cols, y.to(out_ptr.dtype.element_ty), mask=hmask)


@triton.jit
def _fused_embedding_bwd_kernel(
    grad_out_ptr,  # input, [N, H] row stride stride_grad_out
    word_ids_ptr,  # [N] int
    position_ids_ptr,  # [N] int
    type_ids_ptr,  # [N] int
    kind_ptr,  # [N] int TokenKind
    visual_index_ptr,  # [N] int
    region_masked_ptr,  # [K] uint8
    visual_ptr,  # [K, H]
    word_ptr,  # [V, H]
    position_ptr,  # [P, H]
    type_ptr,  # [T, H]
    special_ptr,  # [4, H]
    visual_ln_w_ptr,  # [2, H]
    visual_ln_b_ptr,  # [2, H]
    ln_w_ptr,  # [H]
    ln_b_ptr,  # [H] (unused: the bias does not enter the input gradient; kept so both kernels take one list)
    grad_word_ptr,  # output, [V, H] fp32, atomic adds (unused when DETERMINISTIC)
    grad_position_ptr,  # output, [P, H] fp32, atomic adds (unused when DETERMINISTIC)
    grad_visual_ptr,  # output, [K, H] fp32, atomic adds (unused when DETERMINISTIC)
    grad_sum_ptr,  # output, [N, H] fp32 gradient of each token's sum (DETERMINISTIC only)
    grad_region_ptr,  # output, [N, H] fp32 gradient each token sends its region row (DETERMINISTIC only)
    partial_ptr,  # output, [programs, PARTIAL_TYPE + TYPE_ROWS, H] fp32 per-program sums of the small tables
    n_tokens,  # N
    hidden,  # H
    num_types,  # T
    rows_per_program,  # tokens each program walks
    stride_grad_out,
    stride_visual,
    stride_word,
    stride_position,
    stride_type,
    eps,
    dropout_p,
    dropout_scale,
    seed_ptr,  # [1] int64 dropout Philox key, read on the device (no host sync; fresh per CUDA-graph replay)
    rng_offset,
    BLOCK_H: tl.constexpr,
    TYPE_ROWS: tl.constexpr,  # next power of two >= T (rows of the token-type register tile)
    HAS_DROPOUT: tl.constexpr,
    DETERMINISTIC: tl.constexpr,
):
    """Each program walks `rows_per_program` consecutive tokens: recompute, LayerNorm backward (Ba et al. 2016,
    the gradient through the normalisation), the visual LayerNorm backward for text and RoI tokens; small-table
    sums stay in registers until the end (module docstring)."""
    seed = tl.load(seed_ptr) if HAS_DROPOUT else 0
    pid = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_H)
    hmask = cols < hidden
    gain = tl.load(ln_w_ptr + cols, mask=hmask, other=0.0).to(tl.float32)
    special_rows = tl.arange(0, 4)[:, None]
    vis_rows = tl.arange(0, 2)[:, None]
    type_rows = tl.arange(0, TYPE_ROWS)[:, None]
    acc_ln_w = tl.zeros((BLOCK_H,), dtype=tl.float32)
    acc_ln_b = tl.zeros((BLOCK_H,), dtype=tl.float32)
    acc_vis_w = tl.zeros((2, BLOCK_H), dtype=tl.float32)
    acc_vis_b = tl.zeros((2, BLOCK_H), dtype=tl.float32)
    acc_special = tl.zeros((4, BLOCK_H), dtype=tl.float32)
    acc_type = tl.zeros((TYPE_ROWS, BLOCK_H), dtype=tl.float32)

    start = pid * rows_per_program
    end = tl.minimum(start + rows_per_program, n_tokens)
    for row in range(start, end):
        (x, v_hat, v_rstd, v_gain, word, position, token_type, region, special, vis_row, is_word, has_visual,
         has_special) = (
            _token_sum(
                row, cols, hmask, hidden, eps, word_ids_ptr, position_ids_ptr, type_ids_ptr, kind_ptr,
                visual_index_ptr, region_masked_ptr, visual_ptr, word_ptr, position_ptr, type_ptr, special_ptr,
                visual_ln_w_ptr, visual_ln_b_ptr, stride_visual, stride_word, stride_position, stride_type,
            )
        )  # fmt: skip
        centred = tl.where(hmask, x - tl.sum(x, axis=0) / hidden, 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=0) / hidden + eps)
        x_hat = centred * rstd
        dy = tl.load(grad_out_ptr + row * stride_grad_out + cols, mask=hmask, other=0.0).to(tl.float32)
        if HAS_DROPOUT:
            keep = _dropout_keep(row, cols, hidden, dropout_p, seed, rng_offset)
            dy = tl.where(keep, dy * dropout_scale, 0.0)
        acc_ln_w += dy * x_hat
        acc_ln_b += dy
        # LayerNorm backward: ds = rstd * (g dy - mean(g dy) - x_hat * mean(g dy x_hat))
        g_dy = dy * gain
        ds = rstd * (g_dy - (x_hat * (tl.sum(g_dy * x_hat, axis=0) / hidden) + tl.sum(g_dy, axis=0) / hidden))
        ds = tl.where(hmask, ds, 0.0)

        acc_type += tl.where(type_rows == token_type, ds[None, :], 0.0)
        acc_special += tl.where((special_rows == special) & has_special, ds[None, :], 0.0)
        # the region row through the visual LayerNorm the token's kind picks
        acc_vis_w += tl.where((vis_rows == vis_row) & has_visual, (ds * v_hat)[None, :], 0.0)
        acc_vis_b += tl.where((vis_rows == vis_row) & has_visual, ds[None, :], 0.0)
        g_ds = ds * v_gain
        dv = v_rstd * (g_ds - (v_hat * (tl.sum(g_ds * v_hat, axis=0) / hidden) + tl.sum(g_ds, axis=0) / hidden))
        if DETERMINISTIC:
            tl.store(grad_sum_ptr + row * hidden + cols, ds, mask=hmask)
            tl.store(grad_region_ptr + row * hidden + cols, dv, mask=hmask & has_visual)
        else:
            # Relaxed: these adds only accumulate into buffers that nothing in this kernel reads back, and the
            # launch boundary orders them before any reader; acq_rel (the default) would put a MEMBAR.ALL.GPU
            # before each one and invalidate the L1 after it (benchmarks/results/sm90_static.md).
            tl.atomic_add(grad_word_ptr + word * hidden + cols, ds, mask=hmask & is_word, sem="relaxed")
            tl.atomic_add(grad_position_ptr + position * hidden + cols, ds, mask=hmask, sem="relaxed")
            tl.atomic_add(grad_visual_ptr + region * hidden + cols, dv, mask=hmask & has_visual, sem="relaxed")

    partial = partial_ptr + pid * (PARTIAL_TYPE + num_types) * hidden
    tl.store(partial + PARTIAL_LN_W * hidden + cols, acc_ln_w, mask=hmask)
    tl.store(partial + PARTIAL_LN_B * hidden + cols, acc_ln_b, mask=hmask)
    tl.store(partial + (PARTIAL_VIS_W + vis_rows) * hidden + cols[None, :], acc_vis_w, mask=hmask[None, :])
    tl.store(partial + (PARTIAL_VIS_B + vis_rows) * hidden + cols[None, :], acc_vis_b, mask=hmask[None, :])
    tl.store(partial + (PARTIAL_SPECIAL + special_rows) * hidden + cols[None, :], acc_special, mask=hmask[None, :])
    type_mask = (type_rows < num_types) & hmask[None, :]
    tl.store(partial + (PARTIAL_TYPE + type_rows) * hidden + cols[None, :], acc_type, mask=type_mask)


# ---------------------------------------------------------------------------------------------------------------------
# host launchers


class Operands(NamedTuple):
    """The op's tensors in kernel order (ops/embedding.py stacks the special rows and the visual LayerNorms)."""

    word_ids: torch.Tensor  # [N] int
    position_ids: torch.Tensor  # [N] int
    type_ids: torch.Tensor  # [N] int
    kind: torch.Tensor  # [N] int TokenKind
    visual_index: torch.Tensor  # [N] int, -1 none
    region_masked: torch.Tensor  # [K] bool
    visual: torch.Tensor  # [K, H]
    word: torch.Tensor  # [V, H]
    position: torch.Tensor  # [P, H]
    token_type: torch.Tensor  # [T, H]
    special: torch.Tensor  # [4, H]
    visual_ln_w: torch.Tensor  # [2, H]
    visual_ln_b: torch.Tensor  # [2, H]
    ln_w: torch.Tensor  # [H]
    ln_b: torch.Tensor  # [H]


def _kernel_operands(ops: Operands) -> tuple[list, list[int]]:
    """Pointers in the kernels' order and the row strides (visual, word, position, type). Index arrays and small
    parameters contiguous, tables with contiguous rows; an empty region set gets a one-row stand-in so every
    pointer is valid (no token reads it: only text and RoI tokens read regions, and they need K > 0)."""
    hidden = ops.word.shape[1]
    visual, masked = ops.visual, ops.region_masked
    if visual.shape[0] == 0:
        visual, masked = visual.new_zeros(1, hidden), masked.new_zeros(1)
    rows = [t if t.stride(-1) == 1 else t.contiguous() for t in (visual, ops.word, ops.position, ops.token_type)]
    indices = [t.contiguous() for t in ops[:5]]
    params = [t.contiguous() for t in (ops.special, ops.visual_ln_w, ops.visual_ln_b, ops.ln_w, ops.ln_b)]
    return [*indices, masked.contiguous().view(torch.uint8), *rows, *params], [t.stride(0) for t in rows]


def _dropout_args(dropout_p: float) -> tuple[float, float, bool]:
    return float(dropout_p), (1.0 / (1.0 - dropout_p) if dropout_p > 0 else 1.0), dropout_p > 0


def fused_embedding_forward(
    ops: Operands, eps: float, dropout_p: float, seed, offset: int
) -> torch.Tensor:  # [N, H] in the word table's dtype
    n, hidden = ops.word_ids.shape[0], ops.word.shape[1]
    out = torch.empty(n, hidden, dtype=ops.word.dtype, device=ops.word.device)
    if n == 0:
        return out
    pointers, strides = _kernel_operands(ops)
    block = row_block(hidden)
    p, scale, has_dropout = _dropout_args(dropout_p)
    key = seed_pointer(seed, ops.word.device)
    _fused_embedding_fwd_kernel[(n,)](
        out, *pointers, hidden, out.stride(0), *strides, eps, p, scale, key, offset,
        BLOCK_H=block, HAS_DROPOUT=has_dropout, num_warps=row_warps(block),
    )  # fmt: skip
    return out


def fused_embedding_backward(
    grad_out: torch.Tensor, ops: Operands, eps: float, dropout_p: float, seed, offset: int, deterministic: bool
) -> tuple[torch.Tensor, ...]:
    """Gradients of (visual, word, position, type, special, visual LN weight, visual LN bias, LN weight, LN bias),
    each in its input's dtype (accumulated in fp32)."""
    n, hidden, k = ops.word_ids.shape[0], ops.word.shape[1], ops.visual.shape[0]
    device, f32 = ops.word.device, torch.float32
    num_types = ops.token_type.shape[0]
    per_sm = PERSISTENT_CTAS_PER_SM["embedding_backward"]
    programs = persistent_programs(n, device, per_sm)
    partial = torch.zeros(max(programs, 1), PARTIAL_TYPE.value + num_types, hidden, dtype=f32, device=device)
    grad_word = torch.zeros(ops.word.shape, dtype=f32, device=device)
    grad_position = torch.zeros(ops.position.shape, dtype=f32, device=device)
    grad_visual = torch.zeros(max(k, 1), hidden, dtype=f32, device=device)
    if n:
        pointers, strides = _kernel_operands(ops)
        per_token = (n, hidden) if deterministic else (1, hidden)  # only written in deterministic mode
        grad_sum = torch.empty(per_token, dtype=f32, device=device)
        grad_region = torch.empty(per_token, dtype=f32, device=device)
        grad_out = grad_out if grad_out.stride(-1) == 1 else grad_out.contiguous()
        block = row_block(hidden)
        p, scale, has_dropout = _dropout_args(dropout_p)
        key = seed_pointer(seed, device)
        warps = accumulating_row_warps(block)
        _fused_embedding_bwd_kernel[(programs,)](
            grad_out, *pointers, grad_word, grad_position, grad_visual, grad_sum, grad_region, partial,
            n, hidden, num_types, triton.cdiv(n, programs), grad_out.stride(0), *strides, eps, p, scale, key, offset,
            BLOCK_H=block, TYPE_ROWS=triton.next_power_of_2(num_types), HAS_DROPOUT=has_dropout,
            DETERMINISTIC=deterministic, num_warps=warps, maxnreg=persistent_max_registers(warps, per_sm),
        )  # fmt: skip
        if deterministic:
            word_ids, position_ids, _, kind, visual_index = (t.long() for t in ops[:5])
            is_word = (kind == TokenKind.TEXT) | (kind == TokenKind.TEXT_ONLY) | (kind == TokenKind.PAD)
            has_visual = (kind == TokenKind.TEXT) | (kind == TokenKind.ROI)
            grad_word = segment_sum(grad_sum, torch.where(is_word, word_ids, -1), ops.word.shape[0])
            grad_position = segment_sum(grad_sum, position_ids, ops.position.shape[0])
            grad_visual = segment_sum(grad_region, torch.where(has_visual, visual_index, -1), max(k, 1))
    sums = partial.sum(0)
    return (
        grad_visual[:k].to(ops.visual.dtype),
        grad_word.to(ops.word.dtype),
        grad_position.to(ops.position.dtype),
        sums[PARTIAL_TYPE.value :].to(ops.token_type.dtype),
        sums[PARTIAL_SPECIAL.value : PARTIAL_TYPE.value].to(ops.special.dtype),
        sums[PARTIAL_VIS_W.value : PARTIAL_VIS_B.value].to(ops.visual_ln_w.dtype),
        sums[PARTIAL_VIS_B.value : PARTIAL_SPECIAL.value].to(ops.visual_ln_b.dtype),
        sums[PARTIAL_LN_W.value].to(ops.ln_w.dtype),
        sums[PARTIAL_LN_B.value].to(ops.ln_b.dtype),
    )
