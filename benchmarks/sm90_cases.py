"""What the static sm_90 scorecard compiles: every kernel variant the project's launchers would launch, at VL-BERT's
shapes, called through the launchers themselves (benchmarks/sm90_compile.py turns their launches into compiles).

Shapes: hidden 768 (Base) and 1024 (Large); attention head dim 64 (12 and 16 heads) and 128 (8 heads), packed rows
of 64, 128 and 256 tokens as views of the fused QKV projection, dropout 0 and 0.1; bf16, fp16 and fp32 (fp32
attention in both precisions, "tf32" and "ieee"); vocabulary 30522; RoIAlign on a C4 map (C = 1024, channels-last)
with 14 x 14 bins. CPU tensors stand in for GPU ones (dtype, strides and alignment are what Triton specialises on);
their values are never read by a kernel, only by the host code around it (segment sums, the RoI sort), which gets
valid indices.

`cases(quick=True)` is CI's subset: a few variants of every kernel (bf16 at Base's sizes, both dropout settings,
the deterministic and atomic backward paths, fp32 attention in both precisions, "tf32" and "ieee", and the bf16
attention backward at head dim 128).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
SEED = 0x5DEECE66D  # any seed but 1: Triton would specialise an integer argument equal to 1 as a constant
TOKENS = 4096  # tokens of a packed batch (row kernels)


@dataclass
class Case:
    """One launcher call: every kernel it launches is a row of the scorecard with these labels."""

    op: str
    variant: str  # shape and mode, e.g. "H768" or "hd64 S128 packed"
    dtype: str  # bf16, fp16, fp32
    dropout: float
    run: Callable[[], None]
    quick: bool = False  # in CI's subset
    labels: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------------
# attention


def _attention(dtype: str, precision: str, head_dim: int, heads: int, seqlen: int, dropout: float, part: str):
    from vlbert_fast.kernels.attention import attention_forward
    from vlbert_fast.kernels.attention_bwd import attention_backward
    from vlbert_fast.ops.attention import dropout_keep_threshold

    rows = max(1, 8192 // seqlen)
    total = rows * seqlen
    qkv = torch.empty(total, 3, heads, head_dim, dtype=DTYPES[dtype])
    cu = torch.arange(0, total + 1, seqlen, dtype=torch.int32)
    threshold, scale = dropout_keep_threshold(dropout)
    args = (seqlen, head_dim**-0.5, threshold, scale, SEED, 0, precision)
    if part == "fwd":
        attention_forward(*qkv.unbind(1), cu, *args)
    else:
        out = torch.empty(total, heads, head_dim, dtype=qkv.dtype)
        lse = torch.empty(heads, total, dtype=torch.float32)
        grad = torch.empty_like(qkv)
        attention_backward(out, *qkv.unbind(1), out, lse, cu, *grad.unbind(1), *args)


def attention_cases(quick: bool) -> list[Case]:
    cases = []
    precisions = [("bf16", "tf32"), ("fp16", "tf32"), ("fp32", "tf32"), ("fp32", "ieee")]
    shapes = [(64, 12), (128, 8)]
    lengths = (64, 128, 256)
    for dtype, precision in precisions:
        for head_dim, heads in shapes:
            for seqlen in lengths:
                for dropout in (0.0, 0.1):
                    for part in ("fwd", "bwd"):
                        variant = f"hd{head_dim} S{seqlen} {part}" + (f" {precision}" if dtype == "fp32" else "")
                        # bf16 and fp32 (tf32 and ieee) at head dim 64; the bf16 backward at 128 too (its dK/dV
                        # tile of 32 queries splits a Philox call's keys between warps)
                        ci = (seqlen == 128 and dtype in ("bf16", "fp32") and (dtype == "bf16" or dropout == 0.0)
                              and (head_dim == 64 or (dtype == "bf16" and part == "bwd")))  # fmt: skip
                        if quick and not ci:
                            continue
                        run = (lambda d=dtype, p=precision, hd=head_dim, h=heads, s=seqlen, q=dropout, pt=part:
                               _attention(d, p, hd, h, s, q, pt))  # fmt: skip
                        cases.append(Case("attention", variant, dtype, dropout, run, ci))
    return cases


# ---------------------------------------------------------------------------------------------------------------------
# the row and tile kernels of the encoder, embedding, heads and visual branch (measured here, changed elsewhere)


def _embedding(dtype: str, hidden: int, dropout: float, part: str, deterministic: bool = False):
    from vlbert_fast.kernels.embedding import Operands, fused_embedding_backward, fused_embedding_forward
    from vlbert_fast.vocabulary import TokenKind

    n, regions, t = TOKENS, 512, DTYPES[dtype]
    ids = torch.zeros(n, dtype=torch.long)
    kind = torch.full((n,), int(TokenKind.TEXT), dtype=torch.long)
    table = lambda rows: torch.empty(rows, hidden, dtype=t)  # noqa: E731
    ops = Operands(ids, ids, ids, kind, ids, torch.zeros(regions, dtype=torch.bool), table(regions), table(30522),
                   table(512), table(3), table(4), table(2), table(2), table(1)[0], table(1)[0])  # fmt: skip
    if part == "fwd":
        fused_embedding_forward(ops, 1e-12, dropout, SEED, 0)
    else:
        fused_embedding_backward(torch.empty(n, hidden, dtype=t), ops, 1e-12, dropout, SEED, 0, deterministic)


def _layer_norm(dtype: str, hidden: int, dropout: float, part: str):
    from vlbert_fast.kernels.layer_norm import layer_norm_backward, layer_norm_forward

    t = DTYPES[dtype]
    x = torch.empty(TOKENS, hidden, dtype=t)
    vector = torch.empty(hidden, dtype=t)
    if part == "fwd":
        layer_norm_forward(x, vector, x, vector, vector, 1e-12, dropout, SEED, 0)
    else:
        stats = torch.empty(TOKENS, dtype=torch.float32)
        layer_norm_backward(x, x, stats, stats, vector, t, dropout, SEED, 0)


def _gelu(dtype: str, width: int, part: str):
    from vlbert_fast.kernels.gelu import bias_gelu_backward, bias_gelu_forward

    x = torch.empty(TOKENS, width, dtype=DTYPES[dtype])
    bias = torch.empty(width, dtype=DTYPES[dtype])
    bias_gelu_forward(x, bias) if part == "fwd" else bias_gelu_backward(x, x, bias)


def _cross_entropy(dtype: str, vocab: int):
    from vlbert_fast.kernels.cross_entropy import cross_entropy_rows
    from vlbert_fast.ops.cross_entropy import linear_padded

    # the chunk's logits as the op makes them: rows padded to 16 elements, the padding scratch
    logits = linear_padded(torch.empty(1024, 8, dtype=DTYPES[dtype]), torch.empty(vocab, 8, dtype=DTYPES[dtype]), None)
    cross_entropy_rows(logits, torch.zeros(1024, dtype=torch.long), -100, padding_is_scratch=True)


def _geometry(dtype: str, part: str):
    from vlbert_fast.kernels.geometry import box_geometry_backward, box_geometry_forward

    boxes, freqs = 2048, 256  # geometry_dim 2048
    values, dim_mat = torch.empty(boxes, 4), torch.empty(freqs)
    out = torch.empty(boxes, 8 * freqs, dtype=DTYPES[dtype])
    box_geometry_forward(values, dim_mat, out) if part == "fwd" else box_geometry_backward(out, values, dim_mat)


def _roi_align(dtype: str, part: str, deterministic: bool = False):
    from vlbert_fast.kernels.roi_align import roi_align_backward, roi_align_forward

    images, channels, height, width, boxes = 8, 1024, 38, 50, 36
    features = torch.empty(images, height, width, channels, dtype=DTYPES[dtype]).permute(0, 3, 1, 2)  # NHWC
    rois = torch.tensor([[i % images, 0.0, 0.0, 320.0, 240.0] for i in range(images * boxes)])
    if part == "fwd":
        roi_align_forward(features, rois, (14, 14), 1 / 16, 1, False)
    else:
        grad = torch.empty(images * boxes, 14, 14, channels, dtype=DTYPES[dtype]).permute(0, 3, 1, 2)
        roi_align_backward(grad, rois, tuple(features.shape), torch.channels_last, 1 / 16, 1, False, deterministic)


def row_cases(quick: bool) -> list[Case]:
    cases = []
    for dtype in DTYPES:
        for hidden in (768, 1024):
            base = hidden == 768 and dtype == "bf16"
            for dropout in (0.0, 0.1):
                for part in ("fwd", "bwd"):
                    cases.append(
                        Case(
                            "layer_norm",
                            f"H{hidden} {part}",
                            dtype,
                            dropout,
                            lambda d=dtype, h=hidden, p=dropout, pt=part: _layer_norm(d, h, p, pt),
                            base,
                        )
                    )
                    modes = [False, True] if part == "bwd" else [False]
                    for deterministic in modes:
                        label = f"H{hidden} {part}" + (" deterministic" if deterministic else "")
                        run = (lambda d=dtype, h=hidden, p=dropout, pt=part, det=deterministic:
                               _embedding(d, h, p, pt, det))  # fmt: skip
                        cases.append(Case("embedding", label, dtype, dropout, run, base))
        for width in (3072, 4096):
            for part in ("fwd", "bwd"):
                run = lambda d=dtype, w=width, pt=part: _gelu(d, w, pt)  # noqa: E731
                cases.append(Case("gelu", f"I{width} {part}", dtype, 0.0, run, width == 3072 and dtype == "bf16"))
        cases.append(Case("cross_entropy", "V30522", dtype, 0.0, lambda d=dtype: _cross_entropy(d, 30522),
                          dtype == "bf16"))  # fmt: skip
        for part in ("fwd", "bwd"):
            cases.append(Case("geometry", f"dim2048 {part}", dtype, 0.0, lambda d=dtype, pt=part: _geometry(d, pt),
                              dtype == "fp32"))  # fmt: skip
            for deterministic in [False, True] if part == "bwd" else [False]:
                label = f"C1024 14x14 NHWC {part}" + (" deterministic" if deterministic else "")
                run = lambda d=dtype, pt=part, det=deterministic: _roi_align(d, pt, det)  # noqa: E731
                cases.append(Case("roi_align", label, dtype, 0.0, run, dtype == "bf16"))
    return [c for c in cases if c.quick] if quick else cases


def cases(quick: bool = False) -> list[Case]:
    """Every launcher call of the scorecard (quick: CI's subset)."""
    return attention_cases(quick) + row_cases(quick)


# Per kernel: the elements it processes per iteration of its hot loop (per program for a kernel without a loop in
# its source), the denominator of loop_instr_per_element; and whether its source has that loop. Without one, the
# hot path is the code outside every SASS loop (the geometry kernel's sin/cos carry libdevice's rarely taken
# range-reduction loops, which are not its hot path).
ELEMENTS = {
    "_attn_fwd_kernel": (lambda c: c["BLOCK_M"] * c["BLOCK_N"], True),
    "_attn_bwd_dkdv_kernel": (lambda c: c["BLOCK_M"] * c["BLOCK_N"], True),
    "_attn_bwd_dq_kernel": (lambda c: c["BLOCK_M"] * c["BLOCK_N"], True),
    "_attn_bwd_preprocess_kernel": (lambda c: c["BLOCK_T"] * c["BLOCK_D"], False),
    "_bdrln_fwd_kernel": (lambda c: c["ROWS"] * c["BLOCK_H"], False),
    "_bdrln_bwd_kernel": (lambda c: c["ROWS"] * c["BLOCK_H"], True),
    "_bias_gelu_fwd_kernel": (lambda c: c["ROWS"] * c["BLOCK_C"], False),
    "_bias_gelu_bwd_kernel": (lambda c: c["ROWS"] * c["BLOCK_C"], True),
    "_cross_entropy_fwd_bwd_kernel": (lambda c: c["BLOCK_V"], True),  # both sweeps' loops, per vocabulary column
    "_fused_embedding_fwd_kernel": (lambda c: c["BLOCK_H"], False),
    "_fused_embedding_bwd_kernel": (lambda c: c["BLOCK_H"], True),
    "_segment_sum_kernel": (lambda c: c["BLOCK_H"], True),
    "_box_geometry_fwd_kernel": (lambda c: 8 * c["BLOCK_M"] * c["BLOCK_F"], False),  # outputs
    "_box_geometry_bwd_kernel": (lambda c: 8 * c["BLOCK_M"] * c["BLOCK_F"], False),  # gradient inputs
    "_roi_align_fwd_kernel": (lambda c: c["BLOCK_C"], True),  # one sample x BLOCK_C channels
    "_roi_align_bwd_kernel": (lambda c: c["BLOCK_C"], True),
    "_roi_align_bwd_deterministic_kernel": (lambda c: c["BLOCK_S"] * c["BLOCK_C"], True),
}


# The CUDA extension's kernels (csrc/*.cu), by name: warp-wide elements per iteration of the hot loop (its innermost
# SASS loop) from the kernel's template arguments. RoIAlign's innermost loop is one sample for 32 threads x VEC
# channels (the last template argument).
CUDA_ELEMENTS = {
    "roi_align_fwd_kernel": lambda template_args: 32 * int(template_args[-1]),
    "roi_align_bwd_kernel": lambda template_args: 32 * int(template_args[-1]),
}
