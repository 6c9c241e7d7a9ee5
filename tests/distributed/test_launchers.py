"""Two "nodes" on this machine: two torchrun agents (one process each) meet at a c10d rendezvous on loopback and
train one ZeRO-2 run together (the reference run of conftest.py). The other launchers are exercised elsewhere:
torchrun on one node and the deepspeed launcher's module form in test_resume.py, plain `python -m vlbert_fast`
(alone, and as ranks given RANK/WORLD_SIZE) in test_universal.py and test_faults.py."""

import json
import math
from pathlib import Path

from vlbert_fast.model.checkpoint_dir import read_marker

from .helpers import deepspeed_launcher, step_losses


def test_two_nodes_train_one_run(reference_run):
    logs = [(reference_run.parent / f"node{n}.log").read_text() for n in range(2)]
    assert "world size 2 | ZeRO-2" in logs[0]  # rank 0 runs on node 0 and prints the header
    losses = step_losses(reference_run)
    assert sorted(losses) == list(range(1, 9)) and all(math.isfinite(v["loss"]) for v in losses.values())
    step8 = reference_run / "checkpoints" / "step8"
    marker = read_marker(step8)
    assert (marker["world_size"], marker["zero_stage"], marker["step"]) == (2, 2, 8)
    # each rank (one per node) wrote its own ZeRO-2 optimizer partition
    assert sorted(p.name for p in step8.glob("zero_pp_rank_*_optim_states.pt")) == [
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt",
    ]
    summary = json.loads((reference_run / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["consumed_samples"] == 8 * 8  # 8 steps of 8 rows over both ranks
    # no warning repeats per step: each node's process shows a given warning at most once
    for log in logs:
        warnings = [line.split("Warning:", 1)[1] for line in log.splitlines() if "Warning:" in line]
        assert len(warnings) == len(set(warnings)), warnings


def test_no_rank_builds_deepspeeds_shared_memory_op(reference_run, ds_env):
    """DeepSpeed's CPU process group compiles deepspeed_shm_comm (28 s on 2 cores) into TORCH_EXTENSIONS_DIR unless
    told the op cannot be built; only its inference layers use it, so our runs skip it (engine/distributed.py
    `skip_shared_memory_op`). The reference run's two ranks trained with ds_env's extensions folder."""
    assert (reference_run / "summary.json").is_file()
    built = sorted(str(p) for p in Path(ds_env["TORCH_EXTENSIONS_DIR"]).rglob("*shm_comm*"))
    assert built == [], built


def test_default_config_on_two_ranks_is_a_config_error(ds_env, tmp_path):
    """`deepspeed --num_gpus 2 --module vlbert_fast pretrain` on the embedded default: its global batch (64 rows of
    micro-batch 64) does not split over 2 ranks, which is found once the world size is known: exit 2 with the sizes
    and a valid choice, before any data or model is built."""
    result = deepspeed_launcher(["pretrain", f"run_dir={tmp_path / 'run'}"], ds_env)
    assert result.returncode == 2, result.tail()
    assert "train.global_batch_size 64 is not a multiple of train.micro_batch_size 64 x world size 2" in result.output
    assert "train.micro_batch_size=32" in result.output
    assert "Traceback" not in result.output
