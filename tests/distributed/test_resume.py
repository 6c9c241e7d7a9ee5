"""Exact resume and torn saves, on 2 ranks with ZeRO-2 (CPU, gloo, deterministic mode).

One run of the reference's config is killed twice and resumed twice, each time with another launcher:
  1. torchrun, 2 processes: rank 1 SIGKILLs itself in the middle of step 5 (after its forward);
  2. the deepspeed launcher (module form, --local_rank=N before our arguments) resumes from step 4; rank 0
     SIGKILLs itself inside the save of step 6, after DeepSpeed wrote every rank's files, before the marker;
  3. torchrun resumes again (from step 4: the torn step-6 save never became `latest`) and finishes.
Its losses at every step, and its final weights, are bitwise those of the uninterrupted reference run (launched as
two torchrun "nodes", tests/distributed/conftest.py).
"""

import pytest
import torch

from vlbert_fast.model.checkpoint_dir import LATEST, MARKER, find_checkpoint
from vlbert_fast.model.consolidate import consolidated_state_dict

from .conftest import REFERENCE_OVERRIDES
from .helpers import deepspeed_launcher, logged_losses, pretrain_args, step_losses, torchrun

pytestmark = pytest.mark.slow  # three 2-process launches, about 30-60 s on 2 cores


def test_killed_and_resumed_run_repeats_the_uninterrupted_losses(reference_run, tiny_config, ds_env, tmp_path):
    run_dir = tmp_path / "run"
    args = pretrain_args(tiny_config, run_dir, *REFERENCE_OVERRIDES)
    reference = step_losses(reference_run)
    assert sorted(reference) == list(range(1, 9))
    checkpoints = run_dir / "checkpoints"

    killed = torchrun(args, ds_env, extra_env={"VLBERT_FAST_FAULT": "kill step=5 rank=1 where=backward"})
    assert killed.returncode != 0, killed.tail()
    assert "[fault injection] rank 1: SIGKILL at step 5 (backward)" in killed.output
    assert (checkpoints / LATEST).read_text() == "step4"
    assert step_losses(run_dir) == {s: reference[s] for s in range(1, 5)}

    torn = deepspeed_launcher(args, ds_env, extra_env={"VLBERT_FAST_FAULT": "kill step=6 rank=0 where=save"})
    assert torn.returncode != 0, torn.tail()
    assert f"resumed from {checkpoints / 'step4'} at step 4" in torn.output, torn.tail()
    assert "[fault injection] rank 0: SIGKILL at step 6 (save)" in torn.output
    # The torn save wrote DeepSpeed's files but never its marker, so `latest` still names step 4.
    assert (checkpoints / "step6" / "mp_rank_00_model_states.pt").is_file()
    assert not (checkpoints / "step6" / MARKER).exists()
    assert (checkpoints / LATEST).read_text() == "step4"
    assert find_checkpoint(run_dir) == checkpoints / "step4"
    reference_lines = logged_losses((reference_run.parent / "node0.log").read_text())
    resumed_lines = logged_losses(torn.output)
    assert {s: resumed_lines[s] for s in (5, 6)} == {s: reference_lines[s] for s in (5, 6)}

    finished = torchrun(args, ds_env)
    assert finished.returncode == 0, finished.tail()
    assert f"resumed from {checkpoints / 'step4'} at step 4" in finished.output
    assert step_losses(run_dir) == reference  # every step, every loss part, bit for bit
    assert (checkpoints / "step6" / MARKER).is_file() and (checkpoints / LATEST).read_text() == "step8"
    ours = consolidated_state_dict(checkpoints / "step8")
    theirs = consolidated_state_dict(reference_run / "checkpoints" / "step8")
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
