"""Faults on 2 ranks (plain `python -m vlbert_fast pretrain` processes given RANK/WORLD_SIZE, so no launcher tears
the survivor down for us): a killed rank and a hung rank make the other exit non-zero with a message within the
configured timeout; non-finite losses on one rank skip the update on both, are counted and logged, and abort the run
after engine.max_nonfinite_steps in a row."""

import math
import sys

import pytest
import torch

from vlbert_fast.model.checkpoint_dir import LATEST
from vlbert_fast.model.consolidate import consolidated_state_dict

from .helpers import fault_time, pretrain_args, python_module, spawn_ranks, step_losses, wait_all, wait_first

pytestmark = pytest.mark.slow  # 2-process launches, 10-20 s each on 2 cores

PRETRAIN = [sys.executable, "-m", "vlbert_fast"]
# Leeway for the survivor to print, close its logs and let the interpreter exit once the collective failed (a
# second on a quiet machine; more when 2 cores are shared with other test workers).
EXIT_SLACK_S = 15.0


def test_killed_rank_makes_the_survivor_exit_with_a_message(tiny_config, ds_env, tmp_path):
    timeout = 30
    args = pretrain_args(tiny_config, tmp_path / "run", f"engine.dist_timeout_s={timeout}")
    procs = spawn_ranks([*PRETRAIN, *args], ds_env, per_rank_env={1: {"VLBERT_FAST_FAULT": "kill step=3"}})
    survivor, exited_at = wait_first(procs, 0, timeout=240)
    (killed,) = wait_all(procs[1:])
    assert killed.returncode == -9, killed.tail()
    assert survivor.returncode == 1, survivor.tail()
    assert "rank 0 of 2: distributed communication failed at step 3" in survivor.output, survivor.tail()
    assert "another rank probably died or hung" in survivor.output
    assert exited_at - fault_time(killed.output) < timeout + EXIT_SLACK_S


def test_hung_rank_makes_the_survivor_exit_after_the_timeout(tiny_config, ds_env, tmp_path):
    timeout = 10  # short, but long enough that two ranks starting up on loaded cores never wait this long
    args = pretrain_args(tiny_config, tmp_path / "run", f"engine.dist_timeout_s={timeout}")
    fault = {1: {"VLBERT_FAST_FAULT": "hang step=3 seconds=300"}}
    procs = spawn_ranks([*PRETRAIN, *args], ds_env, per_rank_env=fault)
    try:
        survivor, exited_at = wait_first(procs, 0, timeout=240)
    finally:
        procs[1].kill()  # still asleep on purpose
    (hung,) = wait_all(procs[1:])
    assert survivor.returncode == 1, survivor.tail()
    assert "rank 0 of 2: distributed communication failed at step 3" in survivor.output, survivor.tail()
    assert f"engine.dist_timeout_s = {timeout} s" in survivor.output
    waited = exited_at - fault_time(hung.output)
    assert timeout - 1 < waited < timeout + EXIT_SLACK_S, waited  # it did wait for the timeout, and not much more


def test_nonfinite_losses_skip_the_step_on_every_rank_then_abort(tiny_config, ds_env, tmp_path):
    """...and the aborted run resumes from its last checkpoint, here on one rank (a ZeRO-0 checkpoint holds the whole
    optimizer state, so it loads on another world size)."""
    run_dir = tmp_path / "run"
    args = pretrain_args(
        tiny_config,
        run_dir,
        "engine.zero_stage=0",  # plain data parallel: DeepSpeed checks nothing itself, the skip is all ours
        "engine.max_nonfinite_steps=3",
        "engine.save_interval_steps=1",
        "engine.keep_last_k=0",
    )
    fault = {1: {"VLBERT_FAST_FAULT": "nan steps=2,4,5,6"}}  # only rank 1's loss goes bad
    results = wait_all(spawn_ranks([*PRETRAIN, *args], ds_env, per_rank_env=fault))
    for rank, result in enumerate(results):
        assert result.returncode == 1, f"rank {rank}:\n{result.tail()}"
        assert "3 steps in a row with a non-finite loss or gradient (steps 4-6" in result.output, result.tail()
        assert f"resume from the last finite checkpoint, {run_dir / 'checkpoints' / 'step5'}" in result.output
    log = results[0].output
    skipped = "step 2: non-finite loss in 1 micro batch(es) over the ranks: update skipped on every rank"
    assert f"{skipped} (1 in a row, 1 in total)" in log
    assert "(3 in a row, 4 in total)" in log
    ckpt = run_dir / "checkpoints"
    weights = {s: consolidated_state_dict(ckpt / f"step{s}") for s in (1, 2, 3, 4, 5)}

    def same(a: int, b: int) -> bool:
        return all(torch.equal(weights[a][k], weights[b][k]) for k in weights[a])

    assert same(1, 2)  # step 2 was skipped on both ranks: no NaN reached the weights, nothing moved
    assert not same(2, 3)  # step 3 trained
    assert same(3, 4) and same(4, 5)
    assert all(torch.isfinite(t).all() for t in weights[5].values())
    assert not (ckpt / "step6").exists() and (ckpt / LATEST).read_text() == "step5"  # aborted before saving 6

    resumed = python_module(args, ds_env)  # no fault this time, world size 1
    assert resumed.returncode == 0, resumed.tail()
    assert f"resumed from {ckpt / 'step5'} at step 5" in resumed.output
    assert "world size 2 -> 1: data restarts at global micro batch 10 of epoch 0" in resumed.output
    losses = step_losses(run_dir)
    assert sorted(losses) == list(range(1, 9))
    assert all(math.isfinite(losses[s]["loss"]) for s in (1, 3, 6, 7, 8))
