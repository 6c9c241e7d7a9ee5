"""One run per run_dir: a second run is refused naming the PID that holds the directory, before it writes anything;
a lock left by a killed run is detected as stale and taken over."""

import os
import signal
import subprocess
import sys

import pytest

from vlbert_fast.engine.run_lock import LOCK_NAME, RunDirLocked, RunLock

from ..shared import output_tail, run_cli

HOLD = (
    "import sys, time; from vlbert_fast.engine.run_lock import RunLock; "
    "lock = RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)"
)


@pytest.fixture
def holder(tmp_path):
    """Another process holding run_dir's lock (as a running `vlbert-fast pretrain` does)."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield run_dir, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_a_second_run_is_refused_naming_the_holder_then_a_killed_holder_leaves_a_stale_lock(holder, synth_cache):
    run_dir, proc = holder
    with pytest.raises(RunDirLocked, match=rf"{run_dir} is in use by another run \(PID {proc.pid} on "):
        RunLock(run_dir).acquire()
    result = run_cli(["pretrain", f"run_dir={run_dir}"], synth_cache, timeout=600)
    assert result.returncode == 2, output_tail(result)
    assert f"is in use by another run (PID {proc.pid} on" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]  # the refused run wrote nothing

    os.kill(proc.pid, signal.SIGKILL)  # dies holding it: the kernel drops the flock, the file still names it
    proc.wait()
    lock = RunLock(run_dir).acquire()
    assert f"took over a stale lock of {run_dir} (PID {proc.pid} on" in lock.note
    assert f'"pid": {os.getpid()}' in (run_dir / LOCK_NAME).read_text()
    lock.release()
    assert (run_dir / LOCK_NAME).read_text() == ""  # released cleanly: the next run finds nothing stale
    with RunLock(run_dir) as again:
        assert again.note is None
