"""Every benchmark in one command: `vlbert-fast bench ...` or `python -m benchmarks.run ...` (same arguments; see
vlbert_fast/commands/bench.py or --help).

    python -m benchmarks.run                          # GPU: kernels, step, peers -> benchmarks/results/
    python -m benchmarks.run all --smoke              # CPU: tiny shapes into a temp dir (checks the harness)
    python -m benchmarks.run kernels --op roi_align --check     # the kernel developer's loop
    python -m benchmarks.run step --compare benchmarks/results --fail-if-regression 5
    python -m benchmarks.run static [--smoke]                  # the static sm_90 scorecard (no GPU needed)

Suites run their modules (benchmarks/registry.py) in this process, each appending rows to <out>/<bench>.csv. Then
the rows this run wrote are read back from the CSVs and become <out>/report.md and <out>/plots/*.png, compared
with --compare when given; report.md's "Not measured" lists the modules not in this checkout and every provider that
could not run here, with the reason (no GPU, a library that is not installed, a compiler that fails or does not finish
on this machine). Without --out a CPU run writes into a fresh temporary directory. Exit status: 0 (also when a peer
is unavailable); 1 when a module of ours or a check failed or a regression passed the limit; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch


def _count_rows(out: Path) -> dict[Path, int]:
    from .harness import read_rows, result_files

    return {path: len(read_rows(path)) for path in result_files(out)}


def _rows_since(out: Path, before: dict[Path, int]) -> list[dict[str, str]]:
    from .harness import read_rows, result_files

    rows = []
    for path in result_files(out):
        rows += read_rows(path)[before.get(path, 0) :]
    return rows


def _module_argv(args, device: torch.device, out: Path) -> list[str]:
    rep_ms = args.rep_ms if args.rep_ms is not None else (100.0 if device.type == "cuda" else 0.0)
    argv = ["--device", str(device), "--results-dir", str(out), "--rep-ms", str(rep_ms)]
    argv += ["--compile-backend", args.compile_backend, "--peak-tflops", str(args.peak_tflops)]
    if _cpu_full_size(args, device):  # the CPU step's own options (benchmarks/bench_cpu_step.py)
        argv += ["--threads", str(args.threads), "--repeats", str(args.repeats)]
        argv += ["--profile"] if args.profile else []
    return argv + (["--smoke"] if args.smoke else [])


def _cpu_full_size(args, device: torch.device) -> bool:
    """A suite at full size on a CPU: only those of registry.CPU_SUITES (the step against HF VisualBERT, the loader)."""
    return device.type == "cpu" and not args.smoke and args.suite != "report"


def _run_module(entry, argv: list[str]) -> bool:
    """Runs one bench module; False when it failed (the traceback is printed and the run goes on)."""
    print(f"== {entry.name}", flush=True)
    start = time.perf_counter()
    try:
        status = entry.module.main(list(argv))
    except SystemExit as exc:  # argparse in a script that does not take the harness's arguments
        status = exc.code
    except Exception:  # one module failing must not lose the others' numbers
        traceback.print_exc()
        status = 1
    print(f"== {entry.name}: {'ok' if not status else 'FAILED'} in {time.perf_counter() - start:.1f} s", flush=True)
    return not status


def _kernel_loop(args, device, out, argv) -> int:
    from . import harness, kernel_loop, registry

    entries = registry.modules_for_op(args.op)
    if not entries:
        print(f"--op {args.op}: no benchmark module measures it yet (registry.SUITES['kernels']); nothing to sweep")
        return 0
    before = _count_rows(out)
    failures = 0
    for entry in entries:
        configs = kernel_loop.block_configs_for(args.op) or [("default", {})]
        for label, settings in configs:
            print(f"-- launch config {label}")
            with harness.patched(settings, label) if settings else contextlib.nullcontext():
                failures += not _run_module(entry, argv)
    kernel_loop.print_sweep(_rows_since(out, before), args.op)
    return failures


def _run_suites(suite: str, budget_s: float | None, argv: list[str], cpu: bool = False) -> tuple[int, list[str]]:
    """Runs every module of the suite(s) (with `cpu`, the CPU's full-size ones); (modules that failed, "name: why"
    of those not in this checkout)."""
    from . import harness, registry

    failures, not_measured = 0, []
    for name in registry.suite_names(suite):
        print(f"=== suite {name}", flush=True)
        entries = registry.entries(name, cpu=cpu)
        for entry in entries:
            if entry.module is None:
                print(f"== {entry.name}: skipped: {entry.missing}")
                not_measured.append(f"{entry.name}: {entry.missing}")
        present = [e for e in entries if e.module is not None]
        deadline = None if budget_s is None else time.monotonic() + budget_s
        for i, entry in enumerate(present):
            if deadline is not None:  # an even share of what is left, so no module starves the next
                harness.set_time_budget(max(0.0, deadline - time.monotonic()) / (len(present) - i))
            failures += not _run_module(entry, argv)
        harness.set_time_budget(None)
    return failures, not_measured


def _command(args) -> str:
    """The command line that reproduces this run, for the report."""
    words = ["vlbert-fast", "bench", args.suite]
    for name in ("op", "seed", "out", "device", "rep_ms", "peak_tflops", "time_budget_s", "fail_if_regression"):
        value = getattr(args, name)
        if value not in (None, 0.0) or (name == "rep_ms" and value is not None):  # 0 ms is a choice, 0 TFLOP/s not
            words += [f"--{name.replace('_', '-')}", str(value)]
    if args.compile_backend != "inductor":
        words += ["--compile-backend", args.compile_backend]
    words += [w for old in args.compare for w in ("--compare", str(old))]
    words += [f"--{flag}" for flag in ("check", "smoke") if getattr(args, flag)]
    return shlex.join(words)


def _static(args) -> int:
    """The static sm_90 scorecard, in a process of its own: its kernels must be compiled, not interpreted, and this
    process may already have imported them for the interpreter."""
    command = [sys.executable, "-m", "benchmarks.sm90_static"] + (["--quick", "--check"] if args.smoke else [])
    command += ["--out", str(args.out)] if args.out else []
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    return subprocess.run(command, cwd=Path(__file__).resolve().parents[1], env=env).returncode


def run(args: argparse.Namespace) -> int:
    if args.suite == "static":
        return _static(args)
    from . import registry

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if _cpu_full_size(args, device) and (args.suite not in registry.CPU_SUITES or args.op):
        print(
            "vlbert-fast bench: no CUDA GPU here; the full sizes are for a GPU. On a CPU, `bench step --device cpu` "
            "measures the training step against HF VisualBERT and `bench data` the loader; add --smoke for the CPU "
            "check of the others."
        )
        return 2
    if args.profile and not _cpu_full_size(args, device):
        print("vlbert-fast bench: --profile profiles the CPU step: `vlbert-fast bench step --device cpu --profile`")
        return 2
    if args.fail_if_regression is not None and not args.compare:
        print("vlbert-fast bench: --fail-if-regression needs --compare OLD.csv (what to compare against)")
        return 2
    if device.type == "cpu" and "TRITON_INTERPRET" not in os.environ:
        os.environ["TRITON_INTERPRET"] = "1"  # before any kernel module is imported: Triton on a CPU is interpreted
    from vlbert_fast.ops import REGISTRY

    from . import compare, harness, kernel_loop, report

    if args.op and args.suite not in ("kernels", "all"):
        print(f"--op {args.op}: ops are kernels; the {args.suite} suite has none (use `bench kernels --op ...`)")
        return 2
    known = sorted(set(registry.known_ops()) | set(REGISTRY))
    if args.op and args.op not in known:
        print(f"--op {args.op}: neither an op nor measured by a kernel benchmark (known: {', '.join(known)})")
        return 2
    try:
        old_rows = compare.load(args.compare) if args.compare else None
    except (OSError, ValueError) as exc:  # a missing file, or a CSV of another schema
        print(f"vlbert-fast bench: {exc}")
        return 2
    cpu_suite = _cpu_full_size(args, device) or (args.suite == "data" and not args.smoke)
    out = harness.RESULTS_DIR if cpu_suite and args.out is None else harness.default_results_dir(args.out, device)
    out.mkdir(parents=True, exist_ok=True)
    before = _count_rows(out) if args.suite != "report" else {}
    argv = _module_argv(args, device, out)
    failures, not_measured = 0, []
    skips_before = harness.skipped_count()
    if args.suite != "report":
        if args.check:
            seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
            for op in [args.op] if args.op else sorted(kernel_loop.CASES):
                failures += not kernel_loop.check(op, device, args.smoke, seed)
        if args.op:
            failures += _kernel_loop(args, device, out, argv)
        else:
            suite_failures, not_measured = _run_suites(
                args.suite, args.time_budget_s, argv, _cpu_full_size(args, device)
            )
            failures += suite_failures
    not_measured += harness.skipped_since(skips_before)  # providers that could not run here, with the reason
    for line in not_measured:
        print(f"not measured: {line}")
    rows = _rows_since(out, before)
    regressions = []
    if args.no_report or args.profile or cpu_suite:  # a CPU suite's modules write their own summaries beside the rows
        print(f"{len(rows)} rows in {out}")
    elif rows:
        path, plots, changes = report.write(out, rows, old_rows, args.fail_if_regression, _command(args), not_measured)
        print(f"report: {path} ({len(rows)} rows, {len(plots)} plots)")
        if args.fail_if_regression is not None:
            regressions = compare.regressions(changes, args.fail_if_regression)
            for c in regressions:
                print(
                    f"REGRESSION {c.label}: {100 * c.change:+.1f}% ({c.old['p50']} -> {c.new['p50']} {c.new['unit']})"
                )
    else:
        print(f"no result rows were written to {out}")
    return 1 if failures or regressions else 0


def main(argv: list[str] | None = None) -> int:
    from vlbert_fast.commands.bench import add_arguments

    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
