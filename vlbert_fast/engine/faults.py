"""Injected faults, for the tests of fault handling (tests/distributed): never set in a real run.

`VLBERT_FAST_FAULT` holds faults separated by ";", each an action and key=value conditions:

    kill  step=5 [rank=1] [where=backward]   the process SIGKILLs itself (where: forward, backward or save)
    hang  step=3 [rank=1] [seconds=600]      the process stops responding (sleeps) before the step's forward
    nan   steps=2,4,5 [rank=1]               the loss of those steps becomes NaN on that rank
    nangrad steps=3 [rank=1]                 the loss stays finite but its gradient is NaN (every parameter's)
    nanweight step=4 [rank=0]                after that step's update, one weight of the model becomes NaN

`where=save` fires inside the checkpoint save of that step: after DeepSpeed has written every rank's files and
before the completion marker and `latest` (the window a torn save would hit). Without `rank` a fault fires on
every rank. Steps count from 1 (the step being computed), as in the log line.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field

import torch

ENV = "VLBERT_FAST_FAULT"
ACTIONS = ("kill", "hang", "nan", "nangrad", "nanweight")
WHERE = ("forward", "backward", "save")


@dataclass
class Fault:
    action: str
    steps: set[int] = field(default_factory=set)
    rank: int | None = None
    where: str = "forward"
    seconds: float = 600.0


def parse(spec: str) -> list[Fault]:
    faults = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        action, *conditions = part.split()
        if action not in ACTIONS:
            raise ValueError(f"{ENV}: unknown fault {action!r} in {part!r}; expected one of {', '.join(ACTIONS)}")
        fault = Fault(action)
        for cond in conditions:
            key, sep, value = cond.partition("=")
            if not sep:
                raise ValueError(f"{ENV}: condition {cond!r} in {part!r} is not key=value")
            if key not in ("step", "steps", "rank", "where", "seconds") or key == "where" and value not in WHERE:
                raise ValueError(f"{ENV}: unknown condition {cond!r} in {part!r}")
            if key in ("step", "steps"):
                fault.steps = {int(s) for s in value.split(",")}
            else:
                setattr(fault, key, {"rank": int, "where": str, "seconds": float}[key](value))
        if not fault.steps:
            raise ValueError(f"{ENV}: fault {part!r} names no step")
        faults.append(fault)
    return faults


class FaultInjector:
    def __init__(self, rank: int, spec: str | None = None):
        spec = os.environ.get(ENV, "") if spec is None else spec
        self.rank = rank
        self.faults = [f for f in parse(spec) if f.rank is None or f.rank == rank]

    def _due(self, action: str, step: int, where: str | None = None) -> Fault | None:
        for fault in self.faults:
            if fault.action == action and step in fault.steps and (where is None or fault.where == where):
                return fault
        return None

    def at(self, where: str, step: int) -> None:
        """Kills or hangs this process if a fault is due at this point of `step`."""
        if self._due("kill", step, where) is not None:
            self._say(f"SIGKILL at step {step} ({where})")
            os.kill(os.getpid(), signal.SIGKILL)
        hang = self._due("hang", step) if where == "forward" else None
        if hang is not None:
            self._say(f"hanging at step {step} for {hang.seconds:g} s")
            time.sleep(hang.seconds)

    def _say(self, what: str) -> None:
        # The wall-clock time lets a test measure how long the other ranks take to notice.
        print(f"[fault injection] rank {self.rank}: {what} (at {time.time():.3f})", file=sys.stderr, flush=True)

    def loss(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        """The loss, or NaN where a fault says so (keeps the graph, so backward still runs); or the same finite loss
        with a NaN gradient."""
        if self._due("nan", step) is not None:
            return loss * float("nan")
        if self._due("nangrad", step) is not None:
            return loss + _NanGradient.apply(loss)
        return loss

    def weights(self, module: torch.nn.Module, step: int) -> None:
        """After step `step`'s update: one weight becomes NaN where a fault says so (this rank's copy)."""
        if self._due("nanweight", step) is not None:
            name, param = next((n, p) for n, p in module.named_parameters() if p.numel())
            self._say(f"NaN written into {name} after step {step}")
            with torch.no_grad():
                param.view(-1)[0] = float("nan")


class _NanGradient(torch.autograd.Function):
    """Forward: exact zeros (the loss keeps its value); backward: NaN."""

    @staticmethod
    def forward(ctx, x):
        return torch.zeros_like(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")
