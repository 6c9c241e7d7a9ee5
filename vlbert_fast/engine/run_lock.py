"""One run per run directory: `run_dir/run.lock`, held by the main rank for the whole run.

The lock is an exclusive `flock` on the file, which the kernel drops when its process ends, however it ends (a
SIGKILL included); the file's content names the holder (PID, host, start time) for the message a second run gets.
A run that finds the file naming another process but can take the lock has found a stale lock (its holder died
without releasing it): it says so and takes it over. A released lock leaves the file empty; the file itself is never
deleted (deleting it would let two processes lock two different files of the same name).

On a file system where flock does not reach across machines (some NFS setups), two runs started on different machines
are not kept apart; every other case is.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = "run.lock"


class RunDirLocked(RuntimeError):
    """Another run holds the run directory; the message names its PID."""


class RunLock:
    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_NAME
        self.handle = None
        self.note: str | None = None
        """Set when a stale lock was taken over: what it said."""

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until release())
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle) or "a process that has not written its PID yet"
            handle.close()
            raise RunDirLocked(
                f"{self.path.parent} is in use by another run ({holder}): two runs on one run_dir would overwrite "
                f"each other's checkpoints and metrics. Wait for it to end, stop it, or choose another run_dir"
            ) from None
        previous = _holder(handle)
        if previous:
            self.note = (
                f"note: took over a stale lock of {self.path.parent} ({previous}, which is no longer running: it was "
                f"killed or crashed)"
            )
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
        self.handle = handle
        return self

    def release(self) -> None:
        if self.handle is None:
            return
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.flush()
        fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
        self.handle.close()
        self.handle = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(handle) -> str | None:
    """Who the lock file names, for a message; None when it is empty."""
    handle.seek(0)
    text = handle.read().strip()
    if not text:
        return None
    try:
        holder = json.loads(text)
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
        return f"PID {holder['pid']} on {holder.get('host', '?')}, started {started}"
    except (ValueError, TypeError, KeyError, AttributeError):
        return f"unreadable lock content {text[:200]!r}"


def lock_run_dir(run_dir: str | os.PathLike, info) -> RunLock | None:
    """The main rank takes the lock; every rank learns whether it did (one all-reduce), so all stop together with
    RunDirLocked when another run holds it. Returns the lock on the main rank (release it at the end), else None."""
    from .distributed import all_reduce_sum

    lock, error = None, None
    if info.is_main:
        try:
            lock = RunLock(run_dir).acquire()
        except RunDirLocked as exc:
            error = exc
    if all_reduce_sum([0.0 if error is None else 1.0], info.device)[0]:
        raise error or RunDirLocked(f"{run_dir} is in use by another run (rank 0 says which)")
    return lock
