"""Work done once per test session and shared by pytest-xdist workers: the first worker to need it builds it under a
file lock in a directory all workers share (the base temp directory's parent under xdist), the others wait and
reuse it. A failed attempt leaves no `.done` marker and is retried by the next worker that needs it."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def locked(path: Path):
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def once(shared: Path, name: str, make: Callable[[Path], None]) -> Path:
    """`make(directory)` run once across xdist workers; returns shared/name."""
    target = shared / name
    with locked(shared / f"{name}.lock"):
        if not (target / ".done").is_file():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            make(target)
            (target / ".done").write_text("ok\n")
    return target


def run_cli(args: list[str], cache: Path, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m vlbert_fast ARGS` in its own process, with `cache` as VLBERT_FAST_CACHE (the session's synthetic
    world and tasks) and no injected fault; `timeout` is a safety net against a hang. `output_tail` of the result
    makes the assertion message."""
    environment = {**os.environ, "VLBERT_FAST_CACHE": str(cache), **(env or {})}
    environment.pop("VLBERT_FAST_FAULT", None)
    command = [sys.executable, "-m", "vlbert_fast", *args]
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=timeout)


def output_tail(result: subprocess.CompletedProcess, chars: int = 3000) -> str:
    return result.stdout[-chars:] + result.stderr[-chars:]
