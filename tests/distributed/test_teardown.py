"""A run destroys the process group it created, however it ends, so that no gloo worker thread is left to the
interpreter's finalization (which can abort a finished process with SIGABRT: engine/distributed.py). Two ranks
call `pretrain` in-process and report afterwards whether torch.distributed is still initialised; a group the caller
made stays the caller's."""

import sys

import pytest

from vlbert_fast.engine.run_lock import RunLock

from .helpers import spawn_ranks, wait_all

pytestmark = pytest.mark.slow  # 2-process launches, 10-20 s each on 2 cores

SCRIPT = """
import sys
import torch.distributed as dist
from vlbert_fast.config import RunConfig, load_config
from vlbert_fast.engine.pretrain_job import pretrain
from vlbert_fast.engine.run_lock import RunDirLocked

config, run_dir, own = sys.argv[1:4]
if own == "caller":
    dist.init_process_group("gloo")
cfg = load_config(RunConfig, [config], [f"run_dir={run_dir}", "train.max_steps=1"])
try:
    pretrain(cfg)
    print("OUTCOME done")
except RunDirLocked:
    print("OUTCOME locked")
print("STILL INITIALISED", dist.is_initialized())
if own == "caller":
    dist.destroy_process_group()  # the caller's to destroy
"""


def _run(tiny_config, ds_env, run_dir, own: str) -> list[str]:
    results = wait_all(spawn_ranks([sys.executable, "-c", SCRIPT, str(tiny_config), str(run_dir), own], ds_env))
    lines = []
    for rank, result in enumerate(results):
        assert result.returncode == 0, f"rank {rank}:\n{result.tail()}"
        wanted = ("OUTCOME", "STILL INITIALISED")
        lines.append(" | ".join(x for x in result.output.splitlines() if x.startswith(wanted)))
    return lines


def test_a_finished_run_destroys_its_process_group(tiny_config, ds_env, tmp_path):
    assert _run(tiny_config, ds_env, tmp_path / "run", "run") == ["OUTCOME done | STILL INITIALISED False"] * 2


def test_a_failed_run_destroys_its_process_group(tiny_config, ds_env, tmp_path):
    with RunLock(tmp_path / "run"):  # the run fails after its process group exists: another run holds run_dir
        lines = _run(tiny_config, ds_env, tmp_path / "run", "run")
    assert lines == ["OUTCOME locked | STILL INITIALISED False"] * 2


def test_a_process_group_the_caller_made_stays(tiny_config, ds_env, tmp_path):
    assert _run(tiny_config, ds_env, tmp_path / "run", "caller") == ["OUTCOME done | STILL INITIALISED True"] * 2
