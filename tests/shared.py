"""Work done once per test session and shared by pytest-xdist workers: the first worker to need it builds it under a
file lock in a directory all workers share (the base temp directory's parent under xdist), the others wait and
reuse it. A failed attempt leaves no `.done` marker and is retried by the next worker that needs it."""

from __future__ import annotations

import fcntl
import shutil
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
