"""The training step on a CPU, ours against Hugging Face VisualBERT, in one process: `vlbert-fast bench step
--device cpu` (or `python -m benchmarks.bench_cpu_step`).

    vlbert-fast bench step --device cpu --out benchmarks/results   # the committed cpu_step.csv and cpu_step.md
    vlbert-fast bench step --device cpu --profile                   # the top ops of one step per provider instead

The sizes a user of a CPU meets first (issue 17): Base width (768 hidden, 12 heads, 3072 intermediate), 2 layers,
BERT's vocabulary of 30522 words, 2048-d region features and 1601 detector classes; a batch of 8 image-text rows of
32 text tokens and 36 regions each (box 0 the whole image; 69 tokens with [END], 552 in all, 15% of the words
masked), fp32, 2 threads (`--threads`), dropout 0 and 0.1 (hidden and attention alike).

Providers (torch.manual_seed(0) before each is built; each its own torch AdamW):
- ours: VLBertForPretraining as configured by default (`model.packed=true`, `model.kernels=auto`): the packed
  encoder, the fused ops' CPU paths, the MLM loss from the chunked linear cross-entropy on the masked words only;
- padded: the same model with `model.packed=false`, the padded plain-PyTorch reference;
- hf_eager, hf_sdpa: transformers' VisualBertForPreTraining at the same sizes on the same batch
  (benchmarks/hf_visualbert.py; its MLM head scores every position, as the library does).

Protocol: for each dropout, every provider is built and warmed up (`--warmup` steps), then `--repeats` rounds each
time one step of every provider, the order rotating by one each round, so load on a shared machine falls on all of
them alike. Per step: zero_grad, forward, backward (timed: op `precomputed_base2_fwd_bwd`, the issue's measure),
then AdamW's step (the whole: op `precomputed_base2`). Rows (bench `cpu_step`, x = dropout): time quantiles 20/50/80
over the rounds, samples/s, tokens/s, the padding share, and `speedup` = the peer's time / ours within each round
(quantiles over the rounds: the spread of the ratio, which load moves far less than the times). The markdown table
`cpu_step.md` beside the CSV is written from the same measurements.

`--profile` times nothing: per dropout and provider, one step after the warm-up under torch.profiler, and the ops
that took the most time (self and total), so a regression is found with one command.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from vlbert_fast.config import ModelConfig
from vlbert_fast.data.collate import collate
from vlbert_fast.data.random import random_example
from vlbert_fast.model import VLBertForPretraining

from . import bench_step, harness, hf_visualbert

PROVIDERS = ("ours", "padded", "hf_eager", "hf_sdpa")
DEFAULT_PROVIDERS = ("ours", "padded", "hf_eager")
OPS = {"fwd_bwd": "precomputed_base2_fwd_bwd", "step": "precomputed_base2"}
ROWS, TEXT, REGIONS = 8, 32, 36
SMOKE_ROWS, SMOKE_TEXT, SMOKE_REGIONS = 2, 6, 3


def model_config(smoke: bool, dropout: float) -> ModelConfig:
    """Base width at 2 layers (module docstring), or the step benchmark's smoke model."""
    if smoke:
        cfg = bench_step.model_config("smoke")
    else:
        cfg = dataclasses.replace(bench_step.model_config("base"), num_hidden_layers=2)
    return dataclasses.replace(cfg, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)


def make_batch(cfg: ModelConfig, smoke: bool):
    """8 image-text rows of 32 text tokens and 36 regions (smoke: 2 rows of 6 and 3), seeded."""
    rows, text, regions = (SMOKE_ROWS, SMOKE_TEXT, SMOKE_REGIONS) if smoke else (ROWS, TEXT, REGIONS)
    g = torch.Generator().manual_seed(0)
    return collate(
        [random_example(cfg, g, (text, text), (regions, regions), text_only=0.0) for _ in range(rows)]
    )  # fmt: skip


@dataclasses.dataclass
class Provider:
    name: str
    model: torch.nn.Module
    loss: Callable[[], torch.Tensor]
    optimizer: torch.optim.Optimizer
    padding: float
    """Share of the provider's layout that is padding."""

    def step(self) -> tuple[float, float]:
        """(forward + backward, whole step) seconds of one training step."""
        self.optimizer.zero_grad(set_to_none=True)
        start = time.perf_counter()
        self.loss().backward()
        mid = time.perf_counter()
        self.optimizer.step()
        return mid - start, time.perf_counter() - start


def build(name: str, cfg: ModelConfig, batch) -> Provider:
    torch.manual_seed(0)
    if name.startswith("hf_"):
        feed = hf_visualbert.inputs(batch, cfg.visual_feature_dim)
        model = hf_visualbert.build(cfg, name.removeprefix("hf_"), torch.device("cpu"), feed)
        loss = lambda: model(**feed).loss  # noqa: E731
        padding = hf_visualbert.padding_share(feed)
    else:
        model = VLBertForPretraining(dataclasses.replace(cfg, packed=name == "ours", check_inputs=False))
        loss = lambda: model(batch).loss  # noqa: E731
        padding = 1.0 - float(batch.attention_mask.sum()) / batch.attention_mask.numel()
    model.train()
    return Provider(name, model, loss, torch.optim.AdamW(model.parameters(), lr=1e-5), padding)


def quantiles(samples: list[float]) -> harness.Timing:
    return harness._quantiles(samples)


def measure(providers: list[Provider], warmup: int, repeats: int) -> dict[str, dict[str, list[float]]]:
    """Per provider, per measure ("fwd_bwd", "step"): the seconds of each round, rounds interleaved (docstring)."""
    for p in providers:
        for _ in range(warmup):
            p.step()
    times = {p.name: {"fwd_bwd": [], "step": []} for p in providers}
    for r in range(repeats):
        k = r % len(providers)
        for p in providers[k:] + providers[:k]:
            fwd_bwd, whole = p.step()
            times[p.name]["fwd_bwd"].append(fwd_bwd)
            times[p.name]["step"].append(whole)
    return times


def write_rows(writer: harness.ResultWriter, times, providers: list[Provider], batch, dropout: float, config) -> None:
    tokens = int(batch.attention_mask.sum())
    for measure_name, op in OPS.items():

        def put(provider: str, metric: str, values, op: str = op) -> None:
            writer.metric(op, provider, "full", metric, "dropout", dropout, values, config)

        for p in providers:
            t = quantiles([1e3 * s for s in times[p.name][measure_name]])
            put(p.name, "time", (t.p20, t.p50, t.p80))
            put(p.name, "samples_per_s", harness.rate_quantiles(batch.num_samples, t))
            put(p.name, "tokens_per_s", harness.rate_quantiles(tokens, t))
            put(p.name, "padding_share", (100 * p.padding,) * 3)
        ours = times.get("ours", {}).get(measure_name)
        for p in providers:
            if ours is not None and p.name != "ours":
                q = quantiles([peer / mine for peer, mine in zip(times[p.name][measure_name], ours, strict=True)])
                put(p.name, "speedup", (q.p20, q.p50, q.p80))


def summary_lines(times, dropout: float) -> list[str]:
    """Markdown rows: per measure and provider, the median ms per step (fastest-slowest round) and ours' speedup."""
    lines = []
    for measure_name, label in (("fwd_bwd", "forward + backward"), ("step", "+ AdamW")):
        for name, samples in times.items():
            ms = [1e3 * s for s in samples[measure_name]]
            speedup = "-"
            if name != "ours" and "ours" in times:
                q = quantiles([a / b for a, b in zip(samples[measure_name], times["ours"][measure_name], strict=True)])
                speedup = f"**{q.p50:.2f}x** ({q.p20:.2f}-{q.p80:.2f})"
            cells = (f"{dropout:g}", label, name, f"{statistics.median(ms):.0f} ({min(ms):.0f}-{max(ms):.0f})", speedup)
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_markdown(path: Path, lines: list[str], header: dict[str, str]) -> None:
    body = [
        "# One training step on a CPU: vlbert_fast against Hugging Face VisualBERT",
        "",
        *(f"- {k}: {v}" for k, v in header.items()),
        "",
        "ms per step: the median over the rounds (fastest-slowest). Ours' speedup over a provider: the median of the",
        "per-round ratios of its time to ours (p20-p80); rounds interleaved in one process (bench_cpu_step.py).",
        "",
        "| dropout | measure | provider | ms per step | ours' speedup |",
        "|---|---|---|---|---|",
        *lines,
        "",
    ]
    path.write_text("\n".join(body))


def profile(providers: list[Provider], dropout: float, rows: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for p in providers:
        p.step()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            p.step()
        averages = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in averages) / 1e3
        print(f"\n== {p.name}, dropout {dropout:g}: one step (forward, backward, AdamW) {total:.0f} ms of CPU time")
        print(averages.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=55))
        print(averages.table(sort_by="cpu_time_total", row_limit=rows, max_name_column_width=55))


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__.splitlines()[0], PROVIDERS, modes=("full",))
    p.set_defaults(providers=",".join(DEFAULT_PROVIDERS), device="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2, the issue's setting)")
    p.add_argument("--repeats", type=int, default=10, help="timed rounds per dropout (each steps every provider)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps of each provider first")
    p.add_argument("--dropouts", default="0.0,0.1", help="comma-separated dropout probabilities")
    p.add_argument("--profile", action="store_true", help="print the top ops of one step per provider; no timing")
    p.add_argument("--profile-rows", type=int, default=15, help="ops per profile table")
    args = p.parse_args(argv)
    providers, _, device, results = harness.resolve(args, PROVIDERS)
    if device.type != "cpu":
        raise SystemExit(f"--device {device}: this benchmark measures the CPU step (benchmarks/bench_step.py the GPU)")
    torch.set_num_threads(args.threads)
    dropouts = [float(d) for d in args.dropouts.split(",") if d]
    repeats, warmup = (2, 1) if args.smoke else (args.repeats, args.warmup)
    load_before = os.getloadavg()
    writer = None if args.profile else harness.ResultWriter(results, "cpu_step", device)
    lines = []
    for dropout in dropouts:
        cfg = model_config(args.smoke, dropout)
        batch = make_batch(cfg, args.smoke)
        built = []
        for name in providers:
            try:
                built.append(build(name, cfg, batch))
            except harness.Unavailable as exc:
                harness.skip("cpu_step", "precomputed", name, f"dropout={dropout:g}", str(exc))
        if args.profile:
            profile(built, dropout, args.profile_rows)
            continue
        times = measure(built, warmup, repeats)
        config = {"rows": batch.num_samples, "tokens": int(batch.attention_mask.sum()), "threads": args.threads,
                  "hidden": cfg.hidden_size, "layers": cfg.num_hidden_layers, "vocab": cfg.vocab_size,
                  "dtype": "float32", "rounds": repeats}  # fmt: skip
        write_rows(writer, times, built, batch, dropout, config)
        lines += summary_lines(times, dropout)
        for line in summary_lines(times, dropout):
            print(line)
        del built
    if writer is None:
        return 0
    header = {
        "command": "python -m benchmarks.bench_cpu_step " + shlex.join(sys.argv[1:] if argv is None else argv),
        "device": writer.env["device"],
        "threads": str(args.threads),
        "torch": torch.__version__,
        "git sha": writer.env["git_sha"],
        "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load average (1 min) before and after": f"{load_before[0]:.1f}, {os.getloadavg()[0]:.1f}",
        "rounds": str(repeats),
    }
    write_markdown(writer.path.with_suffix(".md"), lines, header)
    print(f"{writer.rows_written} rows appended to {writer.path}; table in {writer.path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
