"""When a training loop saves a checkpoint before its end: every `engine.save_interval_steps` optimizer steps, and
whenever `engine.save_interval_minutes` of wall-clock time have passed since the last save (or the start).

The training loop (engine/trainer.py) asks `due(step)` after every optimizer step, on every rank. A save
is collective (DeepSpeed's ZeRO save gathers every rank's partition), so every rank must decide alike: the step rule
is the same arithmetic on every rank, and the clock rule is decided collectively, each rank's "my clock says it is
time" summed over the ranks in one all-reduce, so every rank saves at the same step as soon as any rank's clock has
passed the interval. Ranks whose clocks disagree (they started a few seconds apart) can therefore never deadlock, one
waiting in the save's collectives while the others train on. That all-reduce (one float) runs only when the clock
rule is on.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from ..config.engine import EngineConfig
from .distributed import all_reduce_sum


class SaveSchedule:
    def __init__(
        self,
        cfg: EngineConfig,
        max_steps: int,
        device: torch.device,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.every_steps = cfg.save_interval_steps
        self.every_seconds = 60.0 * cfg.save_interval_minutes
        self.max_steps = max_steps
        self.device = device
        self.clock = clock
        self.last_save = clock()

    def due(self, step: int) -> tuple[bool, str]:
        """(save now, why) after optimizer step `step`. Never at the last step (the loop's end saves it anyway).
        Collective when the clock rule is on: every rank must call it after every step."""
        if step >= self.max_steps:
            return False, ""
        if self.every_steps and step % self.every_steps == 0:
            return True, f"every {self.every_steps} steps"
        if not self.every_seconds:
            return False, ""
        mine = self.clock() - self.last_save >= self.every_seconds
        if all_reduce_sum([float(mine)], self.device)[0] > 0:
            return True, f"{self.every_seconds / 60:g} min since the last save"
        return False, ""

    def saved(self) -> None:
        """A checkpoint was written (by either rule, or by the loop itself): the clock starts again."""
        self.last_save = self.clock()
