"""The one benchmark harness: every kernel benchmark and the full-step suite time through it and write its rows.

A benchmark script builds, for each point of its sweep, a `Workload` per provider (ours, torch eager, torch.compile,
a peer library...): a function that computes the op's output, the tensors its gradients go to, and the bytes each
mode must move. `run_workload` times the modes:
- forward: the function, with autograd recording as in training;
- backward: `out.backward(grad)` on one recorded forward (graph retained, gradients reset between runs);
- full: forward then backward.
On a GPU the timer is `triton.testing.do_bench` (quantiles 20/50/80 of many runs, L2 flushed between them); on a
CPU a wall-clock loop gives the same quantiles (smoke runs only: CPU timings are no claim of speed).

Every measurement becomes rows of `COLUMNS` appended to `<results_dir>/<bench>.csv`: the time in ms and, where the
bytes are known, the bandwidth in GB/s = bytes / time. Rate quantiles mirror time quantiles (p20 of GB/s comes from
p80 of time), so p20 <= p50 <= p80 holds for every metric. CPU runs default to a temporary directory, so CPU
timings never land in benchmarks/results by accident.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

COLUMNS = (
    "bench", "op", "provider", "mode", "metric", "unit", "x_name", "x_value", "p20", "p50", "p80",
    "config_json", "device", "torch", "triton", "cuda", "git_sha", "timestamp",
)  # fmt: skip
MODES = ("forward", "backward", "full")
QUANTILES = (0.2, 0.5, 0.8)
RESULTS_DIR = Path(__file__).resolve().parent / "results"


class Unavailable(RuntimeError):
    """A provider that cannot run this point here (no GPU, no Triton, a backend's declared limit); the run reports
    it and goes on."""


@dataclass
class Workload:
    """One provider at one point of a sweep."""

    run: Callable[[], torch.Tensor]
    """Computes the op's output from prepared inputs."""
    grad_inputs: list[torch.Tensor] = field(default_factory=list)
    """Tensors that receive gradients (reset between timed backward runs); empty: no backward or full mode."""
    bytes_moved: dict[str, int] = field(default_factory=dict)
    """Mode -> bytes the op must read and write in that mode (the formula is the benchmark's); GB/s rows need it."""


@dataclass(frozen=True)
class Timing:
    p20: float
    p50: float
    p80: float


# ---------------------------------------------------------------------------------------------------------------------
# timing


def _cpu_quantiles(fn: Callable[[], object], reset: Callable[[], None], rep_ms: float, max_runs: int) -> Timing:
    reset()
    fn()  # warm-up: first-call allocations, lazy imports, compilation
    samples: list[float] = []
    deadline = time.perf_counter() + rep_ms / 1e3
    while len(samples) < 3 or (time.perf_counter() < deadline and len(samples) < max_runs):
        reset()
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    ordered = sorted(samples)

    def quantile(q: float) -> float:  # linear interpolation, as torch.quantile does
        pos = q * (len(ordered) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    return Timing(*(quantile(q) for q in QUANTILES))


def time_ms(
    fn: Callable[[], object],
    device: torch.device,
    grad_to_none: Sequence[torch.Tensor] = (),
    warmup_ms: float = 25.0,
    rep_ms: float = 100.0,
    max_cpu_runs: int = 10,
) -> Timing:
    """Quantiles 20/50/80 of the time of `fn` in milliseconds."""

    def reset() -> None:
        for t in grad_to_none:
            t.grad = None

    if device.type == "cuda":
        import triton.testing

        values = triton.testing.do_bench(
            fn, warmup=warmup_ms, rep=rep_ms, grad_to_none=list(grad_to_none), quantiles=list(QUANTILES)
        )
        return Timing(*values)
    return _cpu_quantiles(fn, reset, rep_ms, max_cpu_runs)


def gigabytes_per_second(num_bytes: int, ms: float) -> float:
    return num_bytes / (ms * 1e-3) / 1e9


def time_modes(workload: Workload, modes: Sequence[str], device: torch.device, rep_ms: float) -> dict[str, Timing]:
    """Timing per mode; backward and full only where the workload has gradient inputs."""
    timings = {}
    grads = workload.grad_inputs
    if "forward" in modes:
        timings["forward"] = time_ms(workload.run, device, grads, rep_ms=rep_ms)
    if grads and ("backward" in modes or "full" in modes):
        out = workload.run()
        grad_out = torch.randn_like(out)
        if "backward" in modes:
            timings["backward"] = time_ms(
                lambda: out.backward(grad_out, retain_graph=True), device, grads, rep_ms=rep_ms
            )
        if "full" in modes:
            timings["full"] = time_ms(lambda: workload.run().backward(grad_out), device, grads, rep_ms=rep_ms)
    return timings


def copy_workload(num_bytes: int, device: torch.device) -> Workload:
    """The bandwidth ceiling: a device-to-device copy moving `num_bytes` (half read, half written). Benchmarks of
    memory-bound ops record it at each point (op "copy"), so every GB/s figure has its ceiling beside it."""
    elements = max(1, num_bytes // 8)
    src = torch.rand(elements, device=device)
    dst = torch.empty_like(src)
    return Workload(lambda: dst.copy_(src), [], {"forward": 2 * elements * 4})


# ---------------------------------------------------------------------------------------------------------------------
# rows


def environment(device: torch.device) -> dict[str, str]:
    """The columns that say where a row was measured."""
    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # a broken Triton install fails in many ways; the row records that it was not there
        triton_version = "none"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu {platform.processor() or platform.machine()} x{os.cpu_count()}"
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        sha = "unknown"
    return {
        "device": name,
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda or "none",
        "git_sha": sha,
    }


class ResultWriter:
    """Appends rows to `<results_dir>/<bench>.csv`, writing the header when the file is new and refusing a file
    whose header is not `COLUMNS` (rows of another schema must not mix in silently)."""

    def __init__(self, results_dir: Path, bench: str, device: torch.device):
        self.path = Path(results_dir) / f"{bench}.csv"
        self.bench = bench
        self.env = environment(device)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), [])
            if tuple(header) != COLUMNS:
                raise ValueError(f"{self.path}: header {header} is not the harness's columns {list(COLUMNS)}")
        else:
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(COLUMNS)
        self.rows_written = 0

    def write(self, op: str, provider: str, mode: str, metric: str, unit: str, x_name: str, x_value, values, config):
        row = {
            "bench": self.bench,
            "op": op,
            "provider": provider,
            "mode": mode,
            "metric": metric,
            "unit": unit,
            "x_name": x_name,
            "x_value": x_value,
            "p20": f"{values[0]:.6g}",
            "p50": f"{values[1]:.6g}",
            "p80": f"{values[2]:.6g}",
            "config_json": json.dumps(config, sort_keys=True),
            **self.env,
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=COLUMNS).writerow(row)
        self.rows_written += 1


def run_workload(
    writer: ResultWriter,
    op: str,
    provider: str,
    make: Callable[[], Workload],
    x_name: str,
    x_value,
    config: dict,
    modes: Sequence[str],
    device: torch.device,
    rep_ms: float = 100.0,
) -> dict[str, Timing]:
    """Builds the workload (reporting an `Unavailable` provider), times its modes and writes their rows."""
    try:
        workload = make()
    except Unavailable as exc:
        print(f"  {op} {provider} {x_name}={x_value}: skipped ({exc})")
        return {}
    timings = time_modes(workload, modes, device, rep_ms)
    for mode, t in timings.items():
        writer.write(op, provider, mode, "time", "ms", x_name, x_value, (t.p20, t.p50, t.p80), config)
        num_bytes = workload.bytes_moved.get(mode)
        if num_bytes:
            rates = tuple(gigabytes_per_second(num_bytes, ms) for ms in (t.p80, t.p50, t.p20))
            writer.write(op, provider, mode, "bandwidth", "GB/s", x_name, x_value, rates, config)
        rate = f", {gigabytes_per_second(num_bytes, t.p50):.1f} GB/s" if num_bytes else ""
        print(f"  {op} {provider:<14} {mode:<8} {x_name}={x_value}: {t.p50:.3f} ms{rate}")
    return timings


# ---------------------------------------------------------------------------------------------------------------------
# command line shared by the scripts


def parser(description: str, providers: Sequence[str], modes: Sequence[str] = MODES) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="tiny shapes, for a CPU check that the script runs")
    p.add_argument("--providers", default=",".join(providers), help=f"comma-separated subset of {','.join(providers)}")
    p.add_argument("--modes", default=",".join(modes), help=f"comma-separated subset of {','.join(MODES)}")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--results-dir", default=None, help="default: benchmarks/results on a GPU, a temp dir on a CPU")
    p.add_argument("--rep-ms", type=float, default=100.0, help="time budget per measurement")
    p.add_argument(
        "--compile-backend", default="inductor", help="torch.compile backend of the torch_compile provider (recorded)"
    )
    return p


def resolve(args: argparse.Namespace, providers: Sequence[str]) -> tuple[list[str], list[str], torch.device, Path]:
    """Validated providers, modes, device and results directory of parsed arguments."""
    chosen = [p for p in args.providers.split(",") if p]
    unknown = [p for p in chosen if p not in providers]
    if unknown:
        raise SystemExit(f"--providers: unknown {unknown}; choose from {list(providers)}")
    modes = [m for m in args.modes.split(",") if m]
    if [m for m in modes if m not in MODES]:
        raise SystemExit(f"--modes: expected a subset of {list(MODES)}, found {modes}")
    device = torch.device(args.device)
    if args.results_dir is not None:
        results = Path(args.results_dir)
    elif device.type == "cuda":
        results = RESULTS_DIR
    else:
        results = Path(tempfile.gettempdir()) / "vlbert_fast_bench"
    return chosen, modes, device, results
