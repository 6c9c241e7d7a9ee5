"""Metrics of a run: one log line every N steps, a row in metrics.jsonl and TensorBoard scalars (main rank only),
and the sums of a log window. Every line starts with the local time; a step line has the ETA at the last window's
pace and the FLOP rate with the prefix that suits it (GFLOP/s on a CPU, TFLOP/s on a GPU).

metrics.jsonl reads as one run: a resumed run first drops the rows after its checkpoint's step (the dead run logged
them; they are logged again), a fresh start moves an earlier run's file aside to metrics.previous.jsonl, and a row
torn by a kill is dropped. Every row is strict JSON: a NaN or infinite value is written as null (the line's
`nonfinite` key lists those fields).

A progress bar is shown only when stdout is a terminal; log lines are plain text otherwise (CI logs, files).
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from ..data.formats.paths import write_atomic


def memory_gb(device: torch.device) -> float:
    """Peak memory: CUDA allocator peak on a GPU, the process's peak resident set on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def timestamp() -> str:
    """The local wall-clock time that starts every log line."""
    return time.strftime("%Y-%m-%d %H:%M:%S")


def format_duration(seconds: float) -> str:
    """42s, 3m05s, 2h07m, 3d04h: two units at most, for an ETA."""
    s = max(0, round(seconds))
    for unit, size, smaller, smaller_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size}{unit}{s % size // smaller_size:02d}{smaller}"
    return f"{s}s"


def format_rate(per_second: float, unit: str = "FLOP/s") -> str:
    """A rate with the SI prefix that puts 1-999 before the unit, 3 significant digits: 945 GFLOP/s on a CPU where
    TFLOP/s would read 0.000945, 312 TFLOP/s on a GPU."""
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(per_second) >= scale:
            return f"{per_second / scale:.3g} {prefix}{unit}"
    return f"{per_second:.3g} {unit}"


def format_line(step: int, max_steps: int, m: dict) -> str:
    parts = ", ".join(f"{k} {v:.4f}" for k, v in m.get("losses", {}).items())
    grad = m.get("grad_norm")
    eta = "" if m.get("eta_s") is None else f" | ETA {format_duration(m['eta_s'])}"
    mfu = "" if m.get("mfu") is None else f" ({100 * m['mfu']:.1f}% MFU)"
    extra = ""
    if m.get("loss_scale") is not None:
        extra += f" | loss scale {m['loss_scale']:g} ({m.get('overflow_steps') or 0} overflow steps)"
    if m.get("nonfinite_steps"):
        extra += f" | non-finite steps {m['nonfinite_steps']}"
    return (
        f"step {step}/{max_steps}{eta} | loss {m['loss']:.4f} ({parts}) | lr {m['lr']:.2e} | "
        f"grad {'n/a' if grad is None else f'{grad:.3f}'} | {m['samples_per_s']:.1f} samples/s | "
        f"{m['tokens_per_s'] / 1e3:.1f}k tok/s | {format_rate(m['tflops'] * 1e12)}"
        f"{mfu} | data wait {100 * m['data_wait_share']:.0f}% | "
        f"mem {m['memory_gb']:.2f} GB{extra}"
    )


def startup_line(text: str) -> None:
    """A start-up phase as it begins (process group, data, model and engine), printed by the launch's first rank
    (RANK unset or 0) before the logger exists, so a first run that builds or generates for minutes says so."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{timestamp()} {text}", flush=True)


METRICS = "metrics.jsonl"
PREVIOUS = "metrics.previous.jsonl"


def truncate_jsonl(path: Path, after_step: int) -> None:
    """Drops the rows of steps after `after_step` (logged by a run that died after its last checkpoint; the resumed
    run logs them again) and lines torn by a kill (or otherwise not a row), so metrics.jsonl reads as one run."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        step = row.get("step", 0) if isinstance(row, dict) else None
        if isinstance(step, int) and step <= after_step:
            kept.append(line + "\n")
    write_atomic(path, "".join(kept))


def json_row(row: dict) -> str:
    """One strict-JSON line: non-finite floats become null and are listed under `nonfinite`."""
    bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        row = {**{k: (None if k in bad else v) for k, v in row.items()}, "nonfinite": bad}
    return json.dumps(row, allow_nan=False)


class MetricsLogger:
    def __init__(self, run_dir: Path, enabled: bool, max_steps: int, resume_step: int | None = None):
        self.enabled = enabled
        self.max_steps = max_steps
        self.jsonl = None
        self.tb = None
        self.progress = None
        self.note: str | None = None
        """What the log should say about metrics.jsonl (an earlier run's file moved aside)."""
        if not enabled:
            return
        path = run_dir / METRICS
        if resume_step is not None:
            truncate_jsonl(path, resume_step)
        elif path.is_file() and path.stat().st_size:
            path.replace(run_dir / PREVIOUS)
            self.note = f"note: {path} of an earlier run in this run_dir moved to {run_dir / PREVIOUS} (a fresh start)"
        self.jsonl = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides the events a dead run wrote after its last checkpoint (or any earlier run's, on a fresh
        # start: steps count from 1)
        self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=1 if resume_step is None else resume_step + 1)
        if sys.stdout.isatty():
            from rich.progress import Progress

            self.progress = Progress(transient=True)
            self.task = self.progress.add_task("training", total=max_steps)
            self.progress.start()

    def print(self, text: str, stamp: bool = True) -> None:
        """A line of the log (main rank only), starting with the time unless `stamp` is False (the summary)."""
        if not self.enabled:
            return
        text = f"{timestamp()} {text}" if stamp else text
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, flush=True)

    def advance(self, step: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step)

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        if metrics.get("step_seconds") is not None:  # the ETA at the last window's pace
            metrics = {**metrics, "eta_s": metrics["step_seconds"] * (self.max_steps - step)}
        row = {"step": step, "time": time.time(), **{k: v for k, v in metrics.items() if k != "losses"}}
        row.update({f"loss/{k}": v for k, v in metrics.get("losses", {}).items()})
        self.write_row(row)
        for key, value in row.items():
            if key not in ("step", "time") and isinstance(value, (int, float)):
                self.tb.add_scalar(key if "/" in key else f"train/{key}", value, step)
        self.print(format_line(step, self.max_steps, metrics))

    def log_eval(self, step: int, values: dict[str, float], **extra) -> None:
        """An evaluation at `step`: a metrics.jsonl row of its own ({"step", "time", **extra, "val/..."}) and
        TensorBoard scalars under val/."""
        if not self.enabled:
            return
        self.write_row({"step": step, "time": time.time(), **extra, **{f"val/{k}": v for k, v in values.items()}})
        for key, value in values.items():
            self.tb.add_scalar(f"val/{key}", value, step)

    def write_row(self, row: dict) -> None:
        """One line of metrics.jsonl (strict JSON), flushed."""
        if not self.enabled:
            return
        self.jsonl.write(json_row(row) + "\n")
        self.jsonl.flush()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.jsonl is not None:
            self.jsonl.close()
        if self.tb is not None:
            self.tb.close()


class Window:
    """Sums over the steps since the last log line."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.wait = 0.0
        self.samples = 0
        self.tokens = 0
        self.flops = 0.0
        self.loss_sum: dict[str, torch.Tensor] = {}
        self.loss_count: dict[str, int] = defaultdict(int)
        self.grad_norm: float | None = None
        self.steps = 0
        """Optimizer steps in the window (their mean time gives the ETA)."""

    def add_losses(self, total: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        for name, value in {"loss": total, **parts}.items():
            value = value.detach().float()
            self.loss_sum[name] = self.loss_sum[name] + value if name in self.loss_sum else value
            self.loss_count[name] += 1

    def means(self) -> dict[str, float]:
        return {k: float(v) / self.loss_count[k] for k, v in self.loss_sum.items()}
