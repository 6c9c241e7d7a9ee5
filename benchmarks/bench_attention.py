"""Varlen attention: ours (Triton) against flash-attn, PyTorch SDPA and the plain reference, in TFLOP/s.

    python -m benchmarks.bench_attention                  # GPU: 12 heads of 64 (BERT-Base), ~16k tokens, bf16
    python -m benchmarks.bench_attention --dropout 0.1    # the same with attention dropout (pretraining's p)
    python -m benchmarks.bench_attention --smoke          # tiny shapes; on a CPU Triton needs TRITON_INTERPRET=1

Each point is a packed batch of about `tokens` tokens whose sequence lengths are drawn uniformly from
[mean/2, 3 mean/2] (the spread of VL-BERT samples: 10-40 words and 10-100 regions); x is the mean length.

Providers: `triton` (ours), `flash_attn` (`flash_attn_varlen_func`, when installed), `sdpa` (our op's SDPA backend:
pad to [B, heads, max, D], masked SDPA, gather back: what a padded model pays), `sdpa_padded` (SDPA alone on
tensors padded beforehand: the padded layout's best case, padding copies not timed), `reference` (smoke runs only:
one sequence at a time in plain PyTorch); `triton_packed`, `flash_attn_packed`, `sdpa_packed`: the packed entry
(`varlen_attention_packed` on one [T, 3, heads, D] tensor, one gradient: what the encoder runs).

FLOPs (Dao 2023's convention; on the real tokens only, so padding work counts as waste):
- forward = sum over sequences of 4 n^2 D heads (QK^T and PV, 2 FLOPs per multiply-add);
- backward = 2.5 x forward (dV, dP, dQ, dK and the recomputed QK^T); full = 3.5 x forward.
Goals on an H100 (bf16): full >= 200 TFLOP/s at mean length 256, ours >= 0.9 x the best available provider.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from vlbert_fast.ops import varlen_attention, varlen_attention_packed
from vlbert_fast.ops.attention import ATTENTION, ATTENTION_PACKED

from . import harness

PROVIDERS = ("triton", "flash_attn", "sdpa", "sdpa_padded", "reference", "triton_packed", "flash_attn_packed",
             "sdpa_packed")  # fmt: skip
FULL = {"means": (64, 100, 128, 192, 256), "tokens": 16384, "heads": 12, "head_dims": (64, 128), "dtype": "bfloat16"}
SMOKE = {"means": (6,), "tokens": 12, "heads": 1, "head_dims": (16,), "dtype": "float32"}  # a few programs
BACKWARD_FACTOR = {"forward": 1.0, "backward": 2.5, "full": 3.5}


def varlen_lengths(mean: int, tokens: int, seed: int = 0) -> list[int]:
    """Sequence lengths uniform in [mean/2, 3 mean/2] until about `tokens` tokens (the last one cut to fit)."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = max(1, mean // 2), max(1, (3 * mean) // 2)
    lengths: list[int] = []
    while sum(lengths) < tokens:
        lengths.append(int(torch.randint(lo, hi + 1, (), generator=g)))
    lengths[-1] -= sum(lengths) - tokens
    return [n for n in lengths if n > 0]


def forward_flops(lengths: list[int], heads: int, head_dim: int) -> float:
    return float(sum(4 * n * n * head_dim * heads for n in lengths))


def workload(provider, q, k, v, cu, max_len, dropout_p=0.0) -> harness.Workload:
    args = (q, k, v, cu, max_len, dropout_p)
    if provider.endswith("_packed"):
        backend = provider.removesuffix("_packed")
        qkv = torch.stack([q.detach(), k.detach(), v.detach()], 1).requires_grad_(True)
        reasons = ATTENTION_PACKED.not_supported_reasons(qkv, cu, max_len, dropout_p)[backend]
        if reasons:
            raise harness.Unavailable("; ".join(reasons))
        run = functools.partial(varlen_attention_packed, qkv, cu, max_len, dropout_p, backend=backend, check=False)
        return harness.Workload(run, [qkv])
    if provider in ("triton", "flash_attn", "sdpa", "reference"):
        reasons = ATTENTION.not_supported_reasons(*args)[provider]
        if reasons:
            raise harness.Unavailable("; ".join(reasons))
        if provider == "reference" and q.is_cuda:
            raise harness.Unavailable("the per-sequence reference is for smoke runs")
        run = functools.partial(varlen_attention, *args, backend=provider, check=False)
        return harness.Workload(run, [q, k, v])
    # sdpa_padded: the same values padded beforehand (leaves of their own), the key mask built once
    lengths = (cu[1:] - cu[:-1]).long()
    padded = []
    for t in (q, k, v):
        rows = torch.nn.utils.rnn.pad_sequence(list(torch.split(t.detach(), lengths.tolist())), batch_first=True)
        padded.append(rows.transpose(1, 2).contiguous().requires_grad_(True))  # [B, heads, L, D]
    keys = (torch.arange(padded[0].shape[2], device=q.device)[None, :] < lengths[:, None])[:, None, None, :]
    run = lambda: F.scaled_dot_product_attention(*padded, attn_mask=keys, dropout_p=dropout_p)  # noqa: E731
    return harness.Workload(run, padded)


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__.splitlines()[0], PROVIDERS)
    parser.add_argument("--dropout", type=float, default=0.0, help="attention dropout probability (default 0)")
    args = parser.parse_args(argv)
    providers, modes, device, results = harness.resolve(args, PROVIDERS)
    sweep = SMOKE if args.smoke else FULL
    dtype = getattr(torch, sweep["dtype"])
    writer = harness.ResultWriter(results, "attention", device)
    heads = sweep["heads"]
    for head_dim in sweep["head_dims"]:
        for mean in sweep["means"]:
            lengths = varlen_lengths(mean, sweep["tokens"])
            g = torch.Generator().manual_seed(mean)
            q, k, v = (
                torch.randn(sum(lengths), heads, head_dim, generator=g).to(device, dtype).requires_grad_(True)
                for _ in range(3)
            )
            cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
            config = {"heads": heads, "head_dim": head_dim, "dtype": sweep["dtype"], "tokens": sum(lengths),
                      "dropout": args.dropout}  # fmt: skip
            config.update(sequences=len(lengths), max_seqlen=max(lengths))
            flops = forward_flops(lengths, heads, head_dim)
            for provider in providers:
                make = functools.partial(workload, provider, q, k, v, cu, max(lengths), args.dropout)
                timings = harness.run_workload(
                    writer, "varlen_attention", provider, make, "mean_seqlen", mean, config, modes, device,
                    args.rep_ms,
                )  # fmt: skip
                for mode, t in timings.items():
                    work = flops * BACKWARD_FACTOR[mode]
                    rates = tuple(work / (ms * 1e-3) / 1e12 for ms in (t.p80, t.p50, t.p20))
                    writer.write("varlen_attention", provider, mode, "throughput", "TFLOP/s", "mean_seqlen", mean,
                                 rates, config)  # fmt: skip
                    print(f"  {'':16}{provider:<14} {mode:<8} {rates[1]:.3g} TFLOP/s")
    print(f"{writer.rows_written} rows appended to {writer.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
