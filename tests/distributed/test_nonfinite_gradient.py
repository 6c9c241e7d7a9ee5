"""A finite loss with a non-finite gradient (the fault `nangrad`: the loss keeps its value, its gradient is NaN) skips
the update on every rank, is counted and logged like a non-finite loss, and no checkpoint ever holds a non-finite
weight: on one rank without ZeRO (our own check of the gradient norm) and on 2 ranks with ZeRO-2 with only one rank's
gradient bad (DeepSpeed's global norm). Weights that turn non-finite anyway (the fault `nanweight`) stop the run at
the next save, which names the last finite checkpoint; `resume: auto` continues from it."""

import math
import sys

import pytest
import torch

from vlbert_fast.model.checkpoint_dir import LATEST
from vlbert_fast.model.consolidate import consolidated_state_dict

from .helpers import pretrain_args, python_module, spawn_ranks, step_losses, wait_all

pytestmark = pytest.mark.slow  # 1- and 2-process launches, 10-20 s each on 2 cores

SAVE_EVERY_STEP = ["engine.save_interval_steps=1", "engine.keep_last_k=0", "train.max_steps=5"]


def checkpoints(run_dir) -> dict[int, dict[str, torch.Tensor]]:
    ckpt = run_dir / "checkpoints"
    return {int(p.name[4:]): consolidated_state_dict(p) for p in ckpt.iterdir() if p.name.startswith("step")}


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def check_step3_skipped(run_dir, output: str) -> None:
    assert "step 3: non-finite gradient norm with a finite loss (" in output, output[-3000:]
    assert "update skipped on every rank (1 in a row, 1 in total)" in output
    weights = checkpoints(run_dir)
    assert sorted(weights) == [1, 2, 3, 4, 5]
    assert all(torch.isfinite(t).all() for w in weights.values() for t in w.values())  # no NaN checkpoint exists
    assert same(weights[2], weights[3])  # step 3 changed nothing
    assert not same(weights[3], weights[4]) and not same(weights[1], weights[2])  # the others trained
    losses = step_losses(run_dir)
    assert all(math.isfinite(losses[s]["loss"]) for s in (1, 2, 4, 5))


def test_one_rank_plain_data_parallel(tiny_config, ds_env, tmp_path):
    run_dir = tmp_path / "run"
    args = pretrain_args(tiny_config, run_dir, "engine.zero_stage=0", *SAVE_EVERY_STEP)
    result = python_module(args, ds_env, extra_env={"VLBERT_FAST_FAULT": "nangrad steps=3"})
    assert result.returncode == 0, result.tail()
    check_step3_skipped(run_dir, result.output)
    assert "steps skipped for a non-finite loss or gradient: 1" in result.output


def test_two_ranks_zero2_with_one_bad_rank(tiny_config, ds_env, tmp_path):
    run_dir = tmp_path / "run"
    args = pretrain_args(tiny_config, run_dir, "engine.zero_stage=2", *SAVE_EVERY_STEP)
    procs = spawn_ranks(
        [sys.executable, "-m", "vlbert_fast", *args],
        ds_env,
        per_rank_env={1: {"VLBERT_FAST_FAULT": "nangrad steps=3 rank=1"}},
    )
    results = wait_all(procs)
    for rank, result in enumerate(results):
        assert result.returncode == 0, f"rank {rank}:\n{result.tail()}"
    check_step3_skipped(run_dir, results[0].output)


def test_nonfinite_weights_abort_naming_the_last_finite_checkpoint_and_resume_auto_picks_it(
    tiny_config, ds_env, tmp_path
):
    run_dir = tmp_path / "run"
    args = pretrain_args(tiny_config, run_dir, "engine.save_interval_steps=2", "train.max_steps=6")
    aborted = python_module(args, ds_env, extra_env={"VLBERT_FAST_FAULT": "nanweight step=3"})
    assert aborted.returncode == 1, aborted.tail()
    last = run_dir / "checkpoints" / "step2"
    assert (
        "step 4: the weights hold NaN or infinite values (on rank 0: vlbert.region_encoder.mask_appearance); "
        "no checkpoint saved." in aborted.output
    ), aborted.tail()
    assert f"resume from the last finite checkpoint, {last} (engine.resume=auto picks it)" in aborted.output
    assert (run_dir / "checkpoints" / LATEST).read_text() == "step2"
    assert not (run_dir / "checkpoints" / "step4").exists()

    resumed = python_module(args, ds_env)  # engine.resume=auto, no fault
    assert resumed.returncode == 0, resumed.tail()
    assert f"resumed from {last} at step 2" in resumed.output
    weights = checkpoints(run_dir)
    assert sorted(weights) == [2, 4, 6]
    assert all(torch.isfinite(t).all() for w in weights.values() for t in w.values())
    assert sorted(step_losses(run_dir)) == list(range(1, 7))  # each step once in metrics.jsonl
