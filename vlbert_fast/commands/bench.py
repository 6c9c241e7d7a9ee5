"""`vlbert-fast bench [kernels|step|peers|data|all|report|static] [--op NAME] [--check] [--smoke] [--compare OLD.csv]
[--fail-if-regression PCT] [--out DIR]`: the benchmark suites, delegated to benchmarks/run.py. `all` runs the GPU
suites (kernels, step, peers); `data` (the loader: bytes per sample, samples/s, the index at 3.3 M records) runs
on any machine and writes into benchmarks/results; `static` compiles every kernel for sm_90 without a GPU. On a CPU,
`vlbert-fast bench step --device cpu [--profile] [--repeats N] [--threads N]` is the training step against HF
VisualBERT (benchmarks/bench_cpu_step.py).

The benchmarks live in the source checkout (benchmarks/ beside vlbert_fast/), not in the installed package: they
carry results, plots and peers (transformers, torchvision) that a training install does not need. The command
finds them next to the package it was imported from (an editable install, `pip install -e .`, or running from the
checkout), else under $VLBERT_FAST_CHECKOUT or the current directory, and says so clearly when there is none.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HELP = "benchmarks: kernels, the full training step and the peers side by side (CSV, markdown report, plots)"
CONFIG = None
SUITES = ("kernels", "step", "peers", "data", "all", "report", "static")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "suite",
        nargs="?",
        default="all",
        choices=SUITES,
        help="what to measure (default all: kernels, step, peers); data: the loader, on any machine; report: no "
        "measuring, rebuild report.md and plots from --out's CSVs; static: compile every kernel for sm_90 without a "
        "GPU (benchmarks/sm90_static.py; --smoke: CI's subset)",
    )
    parser.add_argument("--op", metavar="NAME", help="kernels: only the benchmarks of this op, once per launch config")
    parser.add_argument(
        "--check", action="store_true", help="first compare every backend with the reference on fresh random inputs"
    )
    parser.add_argument("--seed", type=int, help="inputs of --check (default: a fresh seed, printed)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes: checks the harness on a CPU, not speed")
    parser.add_argument(
        "--compare", action="append", default=[], metavar="OLD.csv", help="earlier results (a CSV or a folder of them)"
    )
    parser.add_argument(
        "--fail-if-regression", type=float, metavar="PCT", help="exit 1 when a compared median is worse by > PCT%%"
    )
    parser.add_argument(
        "--out", metavar="DIR", help="results folder (default: benchmarks/results on a GPU, a temp dir)"
    )
    parser.add_argument("--device", help="default: cuda when there is a GPU, else cpu")
    parser.add_argument("--rep-ms", type=float, help="time per kernel measurement (default 100 on a GPU, 0 on a CPU)")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the compile peers")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="stated peak for MFU (0: model/flops.py)")
    parser.add_argument("--time-budget-s", type=float, help="per suite: points that would start later are skipped")
    parser.add_argument("--no-report", action="store_true", help="write CSV rows only (the report comes later)")
    step = parser.add_argument_group("the training step on a CPU (bench step --device cpu: ours against HF VisualBERT)")
    step.add_argument("--profile", action="store_true", help="print the top ops of one step per provider; no timing")
    step.add_argument("--repeats", type=int, default=10, help="interleaved rounds per dropout (default 10)")
    step.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")


def find_checkout() -> Path | None:
    """The source checkout holding benchmarks/run.py (module docstring), or None."""
    candidates = []
    if os.environ.get("VLBERT_FAST_CHECKOUT"):
        candidates.append(Path(os.environ["VLBERT_FAST_CHECKOUT"]))
    candidates += [Path(__file__).resolve().parents[2], Path.cwd()]
    for root in candidates:
        if (root / "benchmarks" / "run.py").is_file() and (root / "benchmarks" / "harness.py").is_file():
            return root.resolve()
    return None


def to_argv(args: argparse.Namespace) -> list[str]:
    """The command line that parses back into `args` (this command's own arguments), for benchmarks/run.py."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    argv: list[str] = []
    for action in parser._actions:
        value = getattr(args, action.dest, action.default)
        if not action.option_strings:
            argv += [] if value is None else [str(value)]
            continue
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse._StoreTrueAction):
            argv += [flag] if value else []
        elif isinstance(action, argparse._AppendAction):
            argv += [word for item in value or [] for word in (flag, str(item))]
        elif value is not None and value != action.default:
            argv += [flag, str(value)]
    return argv


def main(args: argparse.Namespace, cfg=None) -> int:
    """Runs `python -m benchmarks.run` in the checkout (a process of its own: the benchmarks are the floor above the
    commands, so the package never imports them)."""
    root = find_checkout()
    if root is None:
        print(
            "vlbert-fast bench: benchmarks/ was not found. The benchmarks ship with the source checkout, not the "
            "installed package: run this from a clone of the repository (an editable install, `pip install -e .`, "
            "or `python -m benchmarks.run` in it), or point VLBERT_FAST_CHECKOUT at one.",
            file=sys.stderr,
        )
        return 2
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])])}
    sys.stdout.flush()
    return subprocess.run([sys.executable, "-m", "benchmarks.run", *to_argv(args)], cwd=root, env=env).returncode
