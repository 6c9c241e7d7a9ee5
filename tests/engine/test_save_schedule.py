"""When a run saves before its end (engine/save_schedule.py): every `save_interval_steps` steps and every
`save_interval_minutes` of wall-clock time, never at the last step (the end saves it), the clock restarting at each
save; with several ranks whose clocks disagree, every rank decides to save at the same step."""

import json
import os
import sys

import pytest
import torch

from tests.distributed.helpers import spawn_ranks, wait_all
from vlbert_fast.config import EngineConfig
from vlbert_fast.engine.save_schedule import SaveSchedule


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def decisions(schedule: SaveSchedule, clock: Clock, seconds_per_step: float, steps: int) -> list[int]:
    """The steps at which `schedule` saves when each step takes `seconds_per_step`."""
    saved = []
    for step in range(1, steps + 1):
        clock.now += seconds_per_step
        if schedule.due(step)[0]:
            schedule.saved()
            saved.append(step)
    return saved


def test_step_rule_alone():
    schedule = SaveSchedule(EngineConfig(save_interval_steps=4), max_steps=12, device=torch.device("cpu"))
    assert [s for s in range(1, 13) if schedule.due(s)[0]] == [4, 8]  # 12 is the end: the loop saves it itself
    assert schedule.due(4)[1] == "every 4 steps"


def test_clock_rule_alone_restarts_at_each_save():
    clock = Clock()
    schedule = SaveSchedule(EngineConfig(save_interval_minutes=1.0), 100, torch.device("cpu"), clock=clock)
    assert decisions(schedule, clock, seconds_per_step=25.0, steps=10) == [3, 6, 9]  # 75 s >= 60 s, then again
    clock.now = schedule.last_save + 59.0
    assert schedule.due(11) == (False, "")
    clock.now = schedule.last_save + 60.0
    assert schedule.due(11) == (True, "1 min since the last save")


def test_both_rules_and_a_step_save_restarts_the_clock():
    clock = Clock()
    cfg = EngineConfig(save_interval_steps=5, save_interval_minutes=0.5)
    schedule = SaveSchedule(cfg, 20, torch.device("cpu"), clock=clock)
    # 8 s per step: 30 s pass at step 4 (clock), then step 5 (steps) 8 s later restarts the clock, 10 and 15 by
    # steps, the clock never reaching 30 s between them; 19 would be the clock's but 20 is the end
    assert decisions(schedule, clock, seconds_per_step=8.0, steps=20) == [4, 5, 9, 10, 14, 15, 19]


def test_no_rule_no_save_and_bad_values_refused():
    clock = Clock()
    schedule = SaveSchedule(EngineConfig(), 50, torch.device("cpu"), clock=clock)
    assert decisions(schedule, clock, seconds_per_step=3600.0, steps=50) == []
    with pytest.raises(ValueError, match="save_interval_minutes"):
        EngineConfig(save_interval_minutes=-1.0)
    with pytest.raises(ValueError, match="save_interval_minutes"):
        EngineConfig(save_interval_minutes=float("nan"))


RANK_SCRIPT = """
import json, sys, torch, torch.distributed as dist
from vlbert_fast.config import EngineConfig
from vlbert_fast.engine.save_schedule import SaveSchedule
dist.init_process_group("gloo")
rank = dist.get_rank()
now = [0.0]
schedule = SaveSchedule(EngineConfig(save_interval_minutes=1.0), 100, torch.device("cpu"), clock=lambda: now[0])
# (seconds since the start on rank 0, on rank 1) after each step: rank 1 started later, then rank 0 does
clocks = [(10, 5), (59, 61), (30, 20), (61, 55), (200, 1)]
out = []
for step, pair in enumerate(clocks, 1):
    now[0] = schedule.last_save + pair[rank]
    save, why = schedule.due(step)
    if save:
        schedule.saved()
    out.append([step, save, why])
print("DECISIONS " + json.dumps(out))
dist.destroy_process_group()
"""


def test_ranks_whose_clocks_disagree_save_at_the_same_steps():
    procs = spawn_ranks([sys.executable, "-c", RANK_SCRIPT], env=dict(os.environ), world_size=2)
    results = wait_all(procs, timeout=120)
    per_rank = []
    for rank, result in enumerate(results):
        assert result.returncode == 0, f"rank {rank}:\n{result.tail()}"
        line = next(x for x in result.output.splitlines() if x.startswith("DECISIONS "))
        per_rank.append(json.loads(line.removeprefix("DECISIONS ")))
    assert per_rank[0] == per_rank[1]  # the same decision on both ranks at every step
    # a save as soon as either rank's clock has passed the minute: step 2 (rank 1's), 4 (rank 0's), 5 (rank 0's)
    assert [step for step, save, _ in per_rank[0] if save] == [2, 4, 5]
