"""DeepSpeed's CPU shared-memory op: a build killed half-way leaves torch's lock file, and the next run must remove it
and build instead of waiting forever (engine/comm_op.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from vlbert_fast.engine.comm_op import OP_NAME, remove_stale_build_lock

BUILD = "from vlbert_fast.engine.comm_op import ensure_shm_op; ensure_shm_op()"


def test_lock_with_a_live_builder_is_kept(tmp_path):
    (tmp_path / "lock").touch()
    messages = []
    worker = subprocess.Popen(["sleep", "30"], cwd=tmp_path)  # stands where ninja and the compiler run
    try:
        time.sleep(0.2)
        assert not remove_stale_build_lock(tmp_path, messages.append)
        assert (tmp_path / "lock").exists()
        assert str(worker.pid) in messages[0]
    finally:
        worker.kill()
        worker.wait()
    assert remove_stale_build_lock(tmp_path, messages.append)
    assert not (tmp_path / "lock").exists()
    assert "removed a stale build lock" in messages[-1] and str(tmp_path / "lock") in messages[-1]


@pytest.mark.slow
def test_killed_first_build_does_not_hang_the_next(tmp_path):
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(tmp_path), DS_ACCELERATOR="cpu")
    build_dir = tmp_path / OP_NAME
    first = subprocess.Popen(
        [sys.executable, "-c", BUILD], env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 600
        while not (build_dir / "lock").exists():
            assert first.poll() is None, "the first build ended before it took torch's lock"
            assert time.monotonic() < deadline, "the first build never took torch's lock"
            time.sleep(0.05)
        time.sleep(1.0)  # into the compile
        os.killpg(first.pid, signal.SIGKILL)  # as a preemption or a CI timeout would, compiler included
    finally:
        first.wait()
    assert (build_dir / "lock").exists(), "the killed build should have left torch's lock behind"
    assert not list(build_dir.glob("*.so"))

    second = subprocess.run([sys.executable, "-c", BUILD], env=env, capture_output=True, text=True, timeout=1800)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "removed a stale build lock" in second.stdout
    assert list(build_dir.glob(f"{OP_NAME}*.so"))
    assert not (build_dir / "lock").exists()
