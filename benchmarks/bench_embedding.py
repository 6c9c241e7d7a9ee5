"""Fused embedding: ours (Triton) against the plain-PyTorch reference in eager mode and under torch.compile.

    python -m benchmarks.bench_embedding            # GPU: Base and Large hidden sizes, 16k-64k tokens, bf16
    python -m benchmarks.bench_embedding --smoke    # tiny shapes; on a CPU the Triton provider needs TRITON_INTERPRET=1

The input is a packed pretraining stream: image-text samples of 10-40 text tokens and 10-100 RoIs, text-only
samples of 32-128 tokens (one in three), each closed by [END], filled to exactly N tokens; vocabulary 30522, 512
positions, 3 token types; dropout 0.1.

Bytes each mode must move (the same for every provider, so GB/s compares time):
- forward: the five int64 index arrays and the region flags; one word row per text (and padding) token; the
  position and token-type tables, the four special rows and the LayerNorm parameters once; each region row once;
  the output.
- backward: the output gradient; the forward's reads again (the sum is recomputed, not stored); every gradient
  once: the dense word-table gradient (V x H), the position and type tables, the region rows, the small parameters.
- full: both.
Each point also records a plain copy of the forward's bytes (op "copy"): the bandwidth ceiling the kernels are held
to (goal: forward >= 80%, backward >= 60% of it).
"""

from __future__ import annotations

import functools

import torch

from vlbert_fast.ops import EmbeddingWeights, fused_embedding, fused_embedding_reference
from vlbert_fast.ops.embedding import EMBEDDING
from vlbert_fast.vocabulary import TokenKind

from . import harness

PROVIDERS = ("triton", "triton_deterministic", "torch", "torch_compile")
OPS = ("fused_embedding",)
# the forward's warps per row (kernels/utils.row_warps gives 4 at H = 768 and 1024); the loop sweeps them
BLOCK_CONFIGS = {
    "fused_embedding": [
        (f"forward warps={w}", {"vlbert_fast.kernels.embedding.row_warps": lambda block, w=w: w}) for w in (2, 4, 8)
    ]
}
POSITIONS, TYPES = 512, 3
FULL = {"hidden": (768, 1024), "tokens": (16384, 32768, 65536), "dtype": "bfloat16", "vocab": 30522}
SMOKE = {"hidden": (24,), "tokens": (13,), "dtype": "float32", "vocab": 97}  # a few interpreted programs
DROPOUT = 0.1


def packed_stream(n_tokens: int, vocab: int, seed: int = 0, device: str = "cpu") -> dict[str, torch.Tensor]:
    """A packed stream of exactly n_tokens (module docstring); PAD fills what the last sample leaves."""
    g = torch.Generator().manual_seed(seed)
    kind, pos, typ, vis = [], [], [], []
    regions = 0

    def rand(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (), generator=g))

    while len(kind) < n_tokens:
        text_only = rand(0, 2) == 0
        t = rand(32, 128) if text_only else rand(10, 40)
        r = 0 if text_only else rand(10, 100)
        kind += [TokenKind.TEXT_ONLY if text_only else TokenKind.TEXT] * t + [TokenKind.ROI] * r + [TokenKind.END]
        pos += list(range(t)) + [t] * r + [t + 1]
        typ += [0] * t + [2] * (r + 1)
        vis += ([-1] * t if text_only else [regions] * t) + list(range(regions, regions + r)) + [-1]
        regions += r
    # the last sample is cut to fit: its cut-off tail becomes padding, regions past the cut are never referenced
    kind, pos, typ, vis = kind[:n_tokens], pos[:n_tokens], typ[:n_tokens], vis[:n_tokens]
    regions = max([v + 1 for v in vis if v >= 0], default=0)
    stream = {
        "word_ids": torch.randint(0, vocab, (n_tokens,), generator=g),
        "position_ids": torch.tensor(pos),
        "token_type_ids": torch.tensor(typ),
        "token_kind": torch.tensor([int(k) for k in kind]),
        "visual_index": torch.tensor(vis),
        "region_masked": torch.rand(regions, generator=g) < 0.15,
    }
    return {k: v.to(device) for k, v in stream.items()}


def make_weights(hidden: int, vocab: int, dtype: torch.dtype, device: str, seed: int = 1) -> EmbeddingWeights:
    g = torch.Generator().manual_seed(seed)

    def param(*shape: int, centre: float = 0.0) -> torch.Tensor:
        t = centre + 0.02 * torch.randn(*shape, generator=g)
        return t.to(device=device, dtype=dtype).requires_grad_(True)

    vectors = [param(hidden, centre=1.0 if i in (4, 6, 8) else 0.0) for i in range(10)]
    return EmbeddingWeights(param(vocab, hidden), param(POSITIONS, hidden), param(TYPES, hidden), *vectors)


def bytes_moved(stream: dict[str, torch.Tensor], hidden: int, vocab: int, element: int) -> dict[str, int]:
    """Bytes per mode (module docstring); `element` bytes per table/activation element."""
    n = stream["word_ids"].shape[0]
    k = stream["region_masked"].shape[0]
    kind = stream["token_kind"]
    word_tokens = int(((kind == TokenKind.TEXT) | (kind == TokenKind.TEXT_ONLY) | (kind == TokenKind.PAD)).sum())
    indices = 5 * n * 8 + k
    small = 4 + 4 + 2  # rows of H: the special rows, the visual LayerNorms, the output LayerNorm
    reads = indices + (word_tokens + POSITIONS + TYPES + small + k) * hidden * element
    forward = reads + n * hidden * element
    gradients = (vocab + POSITIONS + TYPES + small + k) * hidden * element
    backward = n * hidden * element + reads + gradients
    return {"forward": forward, "backward": backward, "full": forward + backward}


def workload(provider: str, stream, visual, weights, compiled) -> harness.Workload:
    names = ("word_ids", "position_ids", "token_type_ids", "token_kind", "visual_index")
    args = (*(stream[n] for n in names), visual, stream["region_masked"], weights)
    kwargs = {"dropout_p": DROPOUT, "seed": 1234}
    if provider.startswith("triton"):
        reasons = EMBEDDING.not_supported_reasons(*args)["triton"]
        if reasons:
            raise harness.Unavailable("; ".join(reasons))
        kwargs["deterministic"] = provider == "triton_deterministic"
        run = lambda: fused_embedding(*args, backend="triton", **kwargs)  # noqa: E731
    elif provider == "torch":
        run = lambda: fused_embedding_reference(*args, **kwargs)  # noqa: E731
    else:
        run = lambda: compiled(*args, **kwargs)  # noqa: E731
    vocab, hidden = weights.word.shape
    moved = bytes_moved(stream, hidden, vocab, visual.element_size())
    return harness.Workload(run, [visual, *weights.tensors().values()], moved)


def main(argv: list[str] | None = None) -> int:
    args = harness.parser(__doc__.splitlines()[0], PROVIDERS).parse_args(argv)
    providers, modes, device, results = harness.resolve(args, PROVIDERS)
    sweep = SMOKE if args.smoke else FULL
    dtype = getattr(torch, sweep["dtype"])
    writer = harness.ResultWriter(results, "embedding", device)
    compiled = torch.compile(fused_embedding_reference, backend=args.compile_backend)
    for hidden in sweep["hidden"]:
        weights = make_weights(hidden, sweep["vocab"], dtype, str(device))
        for n in sweep["tokens"]:
            stream = packed_stream(n, sweep["vocab"], device=str(device))
            g = torch.Generator().manual_seed(2)
            visual = torch.randn(stream["region_masked"].shape[0], hidden, generator=g).to(device, dtype)
            visual.requires_grad_(True)
            config = {"hidden": hidden, "dtype": sweep["dtype"], "dropout": DROPOUT, "regions": visual.shape[0]}
            config.update(vocab=sweep["vocab"], compile_backend=args.compile_backend)
            ceiling = bytes_moved(stream, hidden, sweep["vocab"], visual.element_size())["forward"]
            make_copy = functools.partial(harness.copy_workload, ceiling, device)
            harness.run_workload(
                writer, "copy", "torch", make_copy, "tokens", n, config, ["forward"], device, args.rep_ms
            )
            for provider in providers:
                make = functools.partial(workload, provider, stream, visual, weights, compiled)
                harness.run_workload(
                    writer, "fused_embedding", provider, make, "tokens", n, config, modes, device, args.rep_ms
                )
    print(f"{writer.rows_written} rows appended to {writer.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
