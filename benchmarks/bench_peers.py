"""The peers of the precomputed training step, measured in the same run on the same batches as ours: transformers'
VisualBertForPreTraining (eager and SDPA attention), our model with every kernel on its plain-PyTorch reference, and
that reference under torch.compile (benchmarks/bench_step.py says how each is built and what each row means).

    python -m benchmarks.bench_peers            # GPU: Base, batches of 64 and 128 rows of 64 tokens, bf16
    python -m benchmarks.bench_peers --smoke    # CPU: a small model
"""

from __future__ import annotations

from .bench_step import run_scenario


def main(argv: list[str] | None = None) -> int:
    return run_scenario("peers", argv)


if __name__ == "__main__":
    raise SystemExit(main())
