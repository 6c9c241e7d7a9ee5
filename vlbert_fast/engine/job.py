"""What the one training loop (engine/trainer.py) asks of a job: pretraining (engine/pretrain_job.py) and fine-tuning
on a task (engine/finetune_job.py) implement it. The loop calls, in order:

    initial_weights()                before the process group: the weights a fresh run starts from ('' for random),
                                     an error naming what is missing before any work
    build_data(info)                 datasets, sampler, loader (every rank; the main rank may go first); returns
                                     notes for the start-up log
    build_model(info, init_from)     the model, seeded alike on every rank, and what was loaded into it
    max_steps(), steps_per_epoch()   the run's length and an epoch's optimizer steps (the "step" schedule)
    data_source(), describe(), why_random()   the start-up log's words
    on_device(loaded, run)           a loaded micro batch (the loop walks `data`'s epochs) on the device, or None
                                     when it holds no row
    forward(engine, batch)           (loss, its parts for the log)
    measure(batch)                   (samples, tokens, training FLOPs) for the log's rates
    evaluate_now(step), evaluate(run, final)   periodic and final evaluation (logged, in metrics.jsonl)
    end_of_epoch(run), end_of_training(run)   every rank (e.g. reporting and merging skip counts)
    summary(run)                     the job's part of summary.json and of the summary's lines (the loop adds the
                                     steps, time, phases, non-finite steps, resume and checkpoint)

`Run` is what the loop built for one run (config, ranks, DeepSpeed engine, schedule, logger, state); the loop, its
steps (engine/steps.py) and the job's calls above read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from ..config import RunConfig
from ..config.finetune_run import FinetuneConfig
from ..data.pretrain_loader import PretrainData
from ..tasks.task_loader import TaskData
from .checkpoint import TrainState
from .distributed import DistInfo
from .faults import FaultInjector
from .metrics import MetricsLogger

PHASES = ("distributed", "data", "engine", "steps", "checkpoint", "evaluation")
"""Phases of a run whose wall time summary.json (`phase_seconds`) and the summary report: the process group with
DeepSpeed's import, the data (the synthetic world generated or found in its cache, datasets, loader), the model and
the DeepSpeed engine (and a resumed checkpoint), the steps, the final checkpoint, the evaluations. Interpreter
start-up and imports before `train` are not in them."""


class Job(Protocol):
    cfg: RunConfig | FinetuneConfig
    data_workers: int
    """Data-loader worker processes per rank (the automatic thread count leaves them their cores)."""
    data: PretrainData | TaskData
    """Built by `build_data`: the loop sets its epoch and start (`set_epoch`) and iterates its `loader`."""

    def initial_weights(self) -> str: ...
    def build_data(self, info: DistInfo) -> list[str]: ...
    def build_model(self, info: DistInfo, init_from: str) -> tuple[torch.nn.Module, list[str]]: ...
    def max_steps(self) -> int: ...
    def steps_per_epoch(self) -> int: ...
    def data_source(self) -> str: ...
    def describe(self) -> str: ...
    def why_random(self) -> str: ...
    def on_device(self, loaded, run: Run): ...
    def forward(self, engine, batch) -> tuple[torch.Tensor, dict]: ...
    def measure(self, batch) -> tuple[int, int, float]: ...
    def evaluate_now(self, step: int) -> bool: ...
    def evaluate(self, run: Run, final: bool) -> None: ...
    def end_of_epoch(self, run: Run) -> None: ...
    def end_of_training(self, run: Run) -> None: ...
    def summary(self, run: Run) -> tuple[dict, list[str]]: ...


@dataclass
class Run:
    """One run's state, built once by `train` and read by the loop, the steps and the job."""

    cfg: RunConfig | FinetuneConfig
    """Both have model, train (a LoopConfig), engine, seed and run_dir."""
    info: DistInfo
    job: Job
    engine: object
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    dtype: torch.dtype
    logger: MetricsLogger
    faults: FaultInjector
    state: TrainState
    max_steps: int
    resumed_from: Path | None = None
    saved_step: int = -1
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of this process's phases (`PHASES`), reported in summary.json and the summary."""
