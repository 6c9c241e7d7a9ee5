"""Shared setup of the multi-process tests (CPU, gloo): the tiny world, the compiled DeepSpeed op, the reference run.

Each is made once per test session even under pytest-xdist: the first worker to need it builds it under a file lock
in a directory all workers share, the others wait and reuse it.

DeepSpeed's shared-memory op (deepspeed_shm_comm, 25-60 s to compile on 2 cores) is built by `make install` into the
virtual environment (vlbert_fast/engine/comm_op.py); the session builds it here if it is missing, before any launch,
so that no compile runs inside a launch's timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlbert_fast.config import RunConfig, load_config
from vlbert_fast.data.synth import cached_world
from vlbert_fast.engine.comm_op import use_default_extensions_dir

from ..shared import once
from .helpers import TINY_YAML, pretrain_args, two_nodes


@pytest.fixture(scope="session")
def ds_env(session_shared_dir) -> dict:
    """Environment of every launched process: shared caches, CPU DeepSpeed, one thread per rank, no faults."""
    use_default_extensions_dir()
    env = {
        **os.environ,
        "VLBERT_FAST_CACHE": str(session_shared_dir / "cache"),
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("VLBERT_FAST_FAULT", None)

    def build_op(_):
        # Once per session, before the launches (a few seconds when the module is current): torch's hash check
        # rebuilds a stale one, and a stale lock of a killed build is removed (engine/comm_op.py).
        code = "from vlbert_fast.engine.comm_op import ensure_shm_op; ensure_shm_op()"
        subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, timeout=1800)

    once(session_shared_dir, "shm_op", build_op)
    return env


@pytest.fixture(scope="session")
def tiny_config(session_shared_dir, ds_env) -> Path:
    """The tiny run config (helpers.TINY_YAML), with its synthetic world generated into the shared cache."""

    def make(directory: Path) -> None:
        (directory / "tiny.yaml").write_text(TINY_YAML)
        cfg = load_config(RunConfig, [directory / "tiny.yaml"])
        cached_world(cfg.data.synth, Path(ds_env["VLBERT_FAST_CACHE"]))

    return once(session_shared_dir, "tiny", make) / "tiny.yaml"


REFERENCE_OVERRIDES = ("engine.zero_stage=2", "engine.save_interval_steps=2", "engine.keep_last_k=0")


@pytest.fixture(scope="session")
def reference_run(session_shared_dir, ds_env, tiny_config) -> Path:
    """8 uninterrupted steps of 2 ranks with ZeRO-2, launched as two torchrun "nodes" on loopback; checkpoints at
    steps 2, 4, 6 and 8. Returns the run directory (node0.log, node1.log hold the launchers' output)."""

    def make(directory: Path) -> None:
        run_dir = directory / "run"
        results = two_nodes(pretrain_args(tiny_config, run_dir, *REFERENCE_OVERRIDES), ds_env)
        for node, result in enumerate(results):
            (directory / f"node{node}.log").write_text(result.output)
        for node, result in enumerate(results):
            assert result.returncode == 0, f"node {node} failed:\n{result.tail()}"

    return once(session_shared_dir, "reference", make) / "run"
