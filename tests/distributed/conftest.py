"""Shared setup of the multi-process tests (CPU, gloo): the launch environment, the tiny world, the reference run.

Each is made once per test session even under pytest-xdist: the first worker to need it builds it under a file lock
in a directory all workers share, the others wait and reuse it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vlbert_fast.config import RunConfig, load_config
from vlbert_fast.data.synth import cached_world

from ..shared import once
from .helpers import TINY_YAML, pretrain_args, two_nodes


@pytest.fixture(scope="session")
def ds_env(session_shared_dir) -> dict:
    """Environment of every launched process: shared caches, CPU DeepSpeed, one thread per rank, no faults; torch
    extensions built into a folder of this session (test_launchers checks that no rank builds DeepSpeed's op)."""
    env = {
        **os.environ,
        "VLBERT_FAST_CACHE": str(session_shared_dir / "cache"),
        "TORCH_EXTENSIONS_DIR": str(session_shared_dir / "torch_extensions"),
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("VLBERT_FAST_FAULT", None)
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
