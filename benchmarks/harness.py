"""The one benchmark harness: every kernel benchmark and the full-step suite time through it and write its rows.

A benchmark script builds, for each point of its sweep, a `Workload` per provider (ours, torch eager, torch.compile,
a peer library...): a function that computes the op's output, the tensors its gradients go to, and the bytes and
FLOPs each mode must move and compute. `run_workload` times the modes:
- forward: the function, with autograd recording as in training;
- backward: `out.backward(grad)` on one recorded forward (graph retained, gradients reset between runs);
- full: forward then backward.
On a GPU the timer is `triton.testing.do_bench` (warm-up, then quantiles 20/50/80 of many runs, L2 flushed by a
256 MB write before each run); on a CPU a wall-clock loop gives the same quantiles (smoke runs only: CPU timings
are no claim of speed). A workload made by `rotated` cycles through several input sets whose total exceeds L2, so
no run finds its inputs cached even under a timer that does not flush. Long runs (a training step) use
`time_iterations`: CUDA events around every iteration, synchronised once at the end.

Every measurement becomes rows of `COLUMNS` appended to `<results_dir>/<bench>.csv` (the metrics and units are in
`METRICS`). Time is in ms; where the workload states its bytes, bandwidth in GB/s = bytes / time; where it states
its FLOPs, TFLOP/s = FLOPs / time; on a GPU the peak memory allocated during one run, in GiB. Rate quantiles mirror
time quantiles (p20 of GB/s comes from p80 of time), so p20 <= p50 <= p80 holds for every metric. CPU runs default
to a fresh temporary directory, so CPU timings never land in benchmarks/results by accident.

How scripts plug into `vlbert-fast bench` / `python -m benchmarks.run` is documented in benchmarks/registry.py.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import importlib
import itertools
import json
import math
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

COLUMNS = (
    "bench", "op", "provider", "mode", "metric", "unit", "x_name", "x_value", "p20", "p50", "p80",
    "config_json", "device", "torch", "triton", "cuda", "git_sha", "timestamp",
)  # fmt: skip
MODES = ("forward", "backward", "full")
QUANTILES = (0.2, 0.5, 0.8)
RESULTS_DIR = Path(__file__).resolve().parent / "results"
METRICS = {
    # metric: (unit, +1 higher is better / -1 lower is better / 0 a property of the input, never a regression)
    "time": ("ms", -1),
    "bandwidth": ("GB/s", +1),
    "tflops": ("TFLOP/s", +1),
    "samples_per_s": ("samples/s", +1),
    "samples_per_cpu_s": ("samples/CPU-s", +1),
    "tokens_per_s": ("tokens/s", +1),
    "mfu": ("% of stated peak", +1),
    "mfu_measured": ("% of measured peak", +1),
    "peak_memory": ("GiB", -1),
    "padding_share": ("%", 0),
    "bytes_per_sample": ("bytes", -1),
    "open_time": ("ms", -1),
    "rss_growth": ("MB", -1),
    "loss": ("nats", -1),
    "accuracy": ("%", +1),
    "label_mass": ("%", 0),
    "speedup": ("x", +1),  # a peer's time over ours, measured in the same rounds (bench_cpu_step.py)
}


class Unavailable(RuntimeError):
    """A provider that cannot run this point here (no GPU, no Triton, a backend's declared limit, a compiler that fails
    or does not finish on this machine); the run reports it, lists it in report.md, and goes on: an unavailable peer
    never fails a run."""


# (bench, provider, reason) -> the points skipped for it, in this process (benchmarks/run.py puts them in report.md)
_skipped: dict[tuple[str, str, str], list[str]] = {}


def skip(bench: str, op: str, provider: str, point: str, reason: str) -> None:
    """Says that `provider` was not measured on `op` at `point` (x_name=x_value) and why, and keeps it for the
    report's "Not measured"."""
    print(f"  {op} {provider} {point}: skipped ({reason})")
    _skipped.setdefault((bench, provider, reason), []).append(f"{op} {point}")


def skipped_since(mark: int = 0) -> list[str]:
    """Lines `bench provider at points: reason`, one per (bench, provider, reason) recorded after the first `mark`."""
    return [f"{bench} {provider} at {', '.join(points)}: {why}" for (bench, provider, why), points in
            list(_skipped.items())[mark:]]  # fmt: skip


def skipped_count() -> int:
    return len(_skipped)


@dataclass
class Workload:
    """One provider at one point of a sweep."""

    run: Callable[[], torch.Tensor]
    """Computes the op's output from prepared inputs."""
    grad_inputs: list[torch.Tensor] = field(default_factory=list)
    """Tensors that receive gradients (reset between timed backward runs); empty: no backward or full mode."""
    bytes_moved: dict[str, int] = field(default_factory=dict)
    """Mode -> bytes the op must read and write in that mode (the formula is the benchmark's); GB/s rows need it."""
    flops: dict[str, float] = field(default_factory=dict)
    """Mode -> floating-point operations of that mode (the formula is the benchmark's); TFLOP/s rows need it."""
    variants: list[Workload] = field(default_factory=list)
    """Input sets to cycle through (see `rotated`); empty: `run` alone."""


@dataclass(frozen=True)
class Timing:
    p20: float
    p50: float
    p80: float


# ---------------------------------------------------------------------------------------------------------------------
# time budget (benchmarks/run.py gives each suite one; a point that would start after it is skipped and reported)

_deadline: float | None = None


def set_time_budget(seconds: float | None) -> None:
    global _deadline
    _deadline = None if seconds is None else time.monotonic() + seconds


def budget_spent() -> bool:
    return _deadline is not None and time.monotonic() > _deadline


# ---------------------------------------------------------------------------------------------------------------------
# timing


def _quantiles(samples: Sequence[float]) -> Timing:
    ordered = sorted(samples)

    def quantile(q: float) -> float:  # linear interpolation, as torch.quantile does
        pos = q * (len(ordered) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    return Timing(*(quantile(q) for q in QUANTILES))


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
    return _quantiles(samples)


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


def time_iterations(fn: Callable[[int], object], device: torch.device, warmup: int, iters: int) -> Timing:
    """Quantiles of the time of `fn(i)` per iteration, for runs far longer than a kernel (a training step): `warmup`
    untimed iterations (compilation, allocator growth, autotuning), then `iters` timed ones. On a GPU a pair of CUDA
    events brackets each iteration and the host synchronises once at the end, so the GPU never waits for the host
    between iterations; on a CPU, wall-clock time per iteration."""
    for i in range(warmup):
        fn(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        for i, (start, end) in enumerate(events):
            start.record()
            fn(warmup + i)
            end.record()
        torch.cuda.synchronize(device)
        return _quantiles([start.elapsed_time(end) for start, end in events])
    samples = []
    for i in range(iters):
        start = time.perf_counter()
        fn(warmup + i)
        samples.append((time.perf_counter() - start) * 1e3)
    return _quantiles(samples)


def l2_bytes(device: torch.device) -> int:
    """The GPU's L2 cache size; 0 on a CPU (its caches are not what these benchmarks are about)."""
    if device.type != "cuda":
        return 0
    return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0))


def rotation_count(bytes_per_set: int, device: torch.device, max_sets: int = 32) -> int:
    """Input sets to cycle through so that the sets together hold at least twice the L2 cache: the run after a given
    one reads inputs that have been evicted since it last read them. 1 on a CPU."""
    cache = l2_bytes(device)
    if cache == 0:
        return 1
    return max(1, min(max_sets, math.ceil(2 * cache / max(bytes_per_set, 1))))


def rotated(make: Callable[[int], Workload], bytes_per_set: int, device: torch.device) -> Workload:
    """A workload cycling through `rotation_count` input sets, `make(i)` building set i (fresh inputs, the same
    shapes): bytes and FLOPs are the first set's (every set is the same size)."""
    sets = [make(i) for i in range(rotation_count(bytes_per_set, device))]
    grads = [t for w in sets for t in w.grad_inputs]
    return Workload(sets[0].run, grads, sets[0].bytes_moved, sets[0].flops, variants=sets)


def _cycle(fns: list[Callable[[], object]]) -> Callable[[], object]:
    if len(fns) == 1:
        return fns[0]
    order = itertools.cycle(fns)
    return lambda: next(order)()


def _mode_functions(workload: Workload, modes: Sequence[str]) -> dict[str, Callable[[], object]]:
    sets = workload.variants or [workload]
    fns: dict[str, Callable[[], object]] = {}
    if "forward" in modes:
        fns["forward"] = _cycle([w.run for w in sets])
    if workload.grad_inputs and ("backward" in modes or "full" in modes):
        recorded = []
        for w in sets:
            out = w.run()
            recorded.append((w, out, torch.randn_like(out)))
        if "backward" in modes:
            fns["backward"] = _cycle([lambda o=o, g=g: o.backward(g, retain_graph=True) for _, o, g in recorded])
        if "full" in modes:
            fns["full"] = _cycle([lambda w=w, g=g: w.run().backward(g) for w, _, g in recorded])
    return fns


def peak_memory_gib(fn: Callable[[], object], device: torch.device) -> float | None:
    """Peak GPU memory allocated while one call of `fn` runs (inputs, weights and everything resident included), in
    GiB; None on a CPU (no allocator statistics per call there)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**30


def time_modes(workload: Workload, modes: Sequence[str], device: torch.device, rep_ms: float) -> dict[str, Timing]:
    """Timing per mode; backward and full only where the workload has gradient inputs."""
    fns = _mode_functions(workload, modes)
    return {mode: time_ms(fn, device, workload.grad_inputs, rep_ms=rep_ms) for mode, fn in fns.items()}


def gigabytes_per_second(num_bytes: int, ms: float) -> float:
    return num_bytes / (ms * 1e-3) / 1e9


def rate_quantiles(amount: float, t: Timing, scale: float = 1.0) -> tuple[float, float, float]:
    """(p20, p50, p80) of amount * scale per second from time quantiles in ms: the slow time gives the low rate."""
    return tuple(amount * scale / (ms * 1e-3) for ms in (t.p80, t.p50, t.p20))


def copy_workload(num_bytes: int, device: torch.device) -> Workload:
    """The bandwidth ceiling: a device-to-device copy moving `num_bytes` (half read, half written). Benchmarks of
    memory-bound ops record it at each point (op "copy"), so every GB/s figure has its ceiling beside it."""
    elements = max(1, num_bytes // 8)
    src = torch.rand(elements, device=device)
    dst = torch.empty_like(src)
    return Workload(lambda: dst.copy_(src), [], {"forward": 2 * elements * 4})


# ---------------------------------------------------------------------------------------------------------------------
# launch configurations (the kernel developer's loop sweeps them)

_config_extra: dict[str, Any] = {}


@contextlib.contextmanager
def patched(settings: dict[str, Any], label: str) -> Iterator[None]:
    """Sets module attributes ("vlbert_fast.kernels.roi_align.MAX_BLOCK_C": 64, ...) for the duration, restoring
    them after; rows written meanwhile carry `block_config: label` in their config. Launch heuristics live in
    module attributes that launchers read at call time, so a patched value reaches the next launch."""
    saved = []
    try:
        for dotted, value in settings.items():
            module_name, attr = dotted.rsplit(".", 1)
            module = importlib.import_module(module_name)
            if not hasattr(module, attr):
                raise AttributeError(f"block config {label!r}: {module_name} has no attribute {attr!r}")
            saved.append((module, attr, getattr(module, attr)))
            setattr(module, attr, value)
        _config_extra["block_config"] = label
        yield
    finally:
        for module, attr, value in reversed(saved):
            setattr(module, attr, value)
        _config_extra.pop("block_config", None)


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


def result_files(folder: Path) -> list[Path]:
    """The harness's CSVs in `folder`: others sharing it (the static scorecard's sm90_static.csv, with its own
    columns) are not harness rows and are left alone."""
    found = []
    for path in sorted(Path(folder).glob("*.csv")):
        with path.open(newline="") as f:
            if tuple(next(csv.reader(f), [])) == COLUMNS:
                found.append(path)
    return found


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of one results CSV, refusing a file whose header is not `COLUMNS`."""
    with Path(path).open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        if tuple(header) != COLUMNS:
            raise ValueError(f"{path}: header {header} is not the harness's columns {list(COLUMNS)}")
        return [dict(zip(COLUMNS, row, strict=True)) for row in reader if row]


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
            "config_json": json.dumps({**config, **_config_extra}, sort_keys=True),
            **self.env,
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=COLUMNS).writerow(row)
        self.rows_written += 1

    def metric(self, op, provider, mode, metric: str, x_name, x_value, values, config) -> None:
        """A row of one of `METRICS`, its unit filled in."""
        self.write(op, provider, mode, metric, METRICS[metric][0], x_name, x_value, values, config)


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
    if budget_spent():
        skip(writer.bench, op, provider, f"{x_name}={x_value}", "the suite's time budget was spent")
        return {}
    try:
        workload = make()
    except Unavailable as exc:
        skip(writer.bench, op, provider, f"{x_name}={x_value}", str(exc))
        return {}
    fns = _mode_functions(workload, modes)
    timings = {}
    for mode, fn in fns.items():
        t = timings[mode] = time_ms(fn, device, workload.grad_inputs, rep_ms=rep_ms)
        writer.metric(op, provider, mode, "time", x_name, x_value, (t.p20, t.p50, t.p80), config)
        num_bytes = workload.bytes_moved.get(mode)
        if num_bytes:
            writer.metric(op, provider, mode, "bandwidth", x_name, x_value, rate_quantiles(num_bytes, t, 1e-9), config)
        flops = workload.flops.get(mode)
        if flops:
            writer.metric(op, provider, mode, "tflops", x_name, x_value, rate_quantiles(flops, t, 1e-12), config)
        memory = peak_memory_gib(fn, device)
        if memory is not None:
            writer.metric(op, provider, mode, "peak_memory", x_name, x_value, (memory,) * 3, config)
        rate = f", {gigabytes_per_second(num_bytes, t.p50):.1f} GB/s" if num_bytes else ""
        rate += f", {flops / (t.p50 * 1e-3) / 1e12:.1f} TFLOP/s" if flops else ""
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
    p.add_argument(
        "--peak-tflops", type=float, default=0.0, help="stated peak TFLOP/s for MFU (0: the table in model/flops.py)"
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
    return chosen, modes, device, default_results_dir(args.results_dir, device)


def default_results_dir(given: str | Path | None, device: torch.device) -> Path:
    """`given`, else benchmarks/results on a GPU and a fresh temporary directory on a CPU (a new one per call, so a
    smoke run's report holds its own rows only, never an earlier run's)."""
    if given is not None:
        return Path(given)
    if device.type == "cuda":
        return RESULTS_DIR
    return Path(tempfile.mkdtemp(prefix="vlbert_fast_bench_"))
