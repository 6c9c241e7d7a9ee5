"""Two "nodes" on this machine: two torchrun agents (one process each) meet at a c10d rendezvous on loopback and
train one ZeRO-2 run together (the reference run of conftest.py). The other launchers are exercised elsewhere:
torchrun on one node and the deepspeed launcher's module form in test_resume.py, plain `python -m vlbert_fast`
(alone, and as ranks given RANK/WORLD_SIZE) in test_universal.py and test_faults.py."""

import json
import math

from vlbert_fast.engine.checkpoint import read_marker

from .helpers import step_losses


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
