"""The one training loop on DeepSpeed, for pretraining (`vlbert-fast pretrain`) and every fine-tuning task
(`vlbert-fast finetune --task ...`). A job (engine/job.py: engine/pretrain_job.py, engine/finetune_job.py) says what
differs; the rest reads top to bottom here:

1. `train`: the checkpoint to resume and its config guard, the weights to start from, the process group
   (engine/distributed.py), the run directory's lock (engine/run_lock.py), all before any work;
2. `_run`: the job's data and model, the optimizer and schedule (engine/optim.py) in the DeepSpeed engine
   (engine/ds_config.py), the resumed checkpoint (engine/checkpoint.py), the logger (engine/metrics.py);
3. `_train`: each step's micro batches (engine/steps.py), a log line every `train.log_every` steps, the job's
   evaluation when it asks, a checkpoint when engine/save_schedule.py says so;
4. `_finish`: a checkpoint, the job's final evaluation, summary.json and the summary. However the run ends, the lock
   is released and the process group destroyed.

Resume (engine.resume) restores model, optimizer, schedule, data position and every rank's RNG states, so the
continued run computes what the uninterrupted one would have (bit for bit on a CPU with engine.deterministic). A
failed collective (a dead or hung rank) ends this rank with a message instead of a hang.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from ..config import save_config
from ..model.checkpoint_dir import is_complete, read_marker, tag_for
from ..model.flops import peak_tflops
from ..version import __version__
from ..vocabulary import PRECISIONS
from . import checkpoint, checkpoint_io
from .checkpoint import TrainState
from .distributed import (
    DistInfo,
    all_reduce_sum,
    close_distributed,
    comm_failure_message,
    init_distributed,
    is_comm_failure,
)
from .ds_config import deepspeed_config, mark_zero3_leaves
from .faults import FaultInjector
from .guards import TrainingAborted
from .job import PHASES, Job, Run
from .metrics import MetricsLogger, Window, startup_line
from .optim import build_optimizer, build_scheduler
from .run_lock import lock_run_dir
from .save_schedule import SaveSchedule
from .steps import StepTracker, after_step, log_window, loss_scale, optimizer_step


def build_engine(model: torch.nn.Module, cfg, info: DistInfo, max_steps: int, steps_per_epoch: int = 0):
    """(DeepSpeed engine, optimizer, scheduler) around `model` (on the device): the optimizer and schedule of
    `cfg.train` (engine/optim.py), the ZeRO-3 leaf modules marked, our checkpoint engine (engine/checkpoint_io.py)."""
    import deepspeed

    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, max_steps, steps_per_epoch)
    mark_zero3_leaves(model, cfg)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=deepspeed_config(cfg, info.world_size)
    )
    # where the step's global gradient norm comes from (engine/guards.py): DeepSpeed's optimizer wrapping ours, if any
    optimizer.norm_source = engine.optimizer if engine.optimizer is not optimizer else None
    checkpoint_io.install(engine)
    if info.world_size == 1 and cfg.engine.zero_stage == 0:
        # A lone rank has nothing to all-reduce; DeepSpeed would still flatten every gradient into one buffer, "sum"
        # it over one rank, divide by 1 and copy it back after each backward (about 4% of the embedded default's step).
        engine.enable_backward_allreduce = False
    return engine, optimizer, scheduler


def train(job: Job) -> dict:
    """Runs `job` to its end (module docstring); returns its summary (also run_dir/summary.json)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # dataloader workers fork after the tokenizer runs
    cfg = job.cfg
    run_dir = Path(cfg.run_dir)
    notes: list[str] = []
    resume_from = checkpoint.resolve_resume(cfg, notes)
    if resume_from is not None and is_complete(resume_from):
        checkpoint.check_config(cfg, read_marker(resume_from)["config"], resume_from)  # before any work
    init_from = job.initial_weights() if resume_from is None else ""  # a missing one: an error before any work
    started = time.perf_counter()
    startup_line(f"start-up: process group (DeepSpeed, world size {os.environ.get('WORLD_SIZE', '1')})")
    info = init_distributed(cfg.engine, data_workers=job.data_workers)
    lock = None
    try:
        cfg.train.accumulation(info.world_size)  # a global batch that does not divide: a config error, before work
        lock = lock_run_dir(run_dir, info)
        notes += [lock.note] if lock and lock.note else []
        return _run(job, info, resume_from, init_from, notes, {"distributed": time.perf_counter() - started})
    finally:
        if lock is not None:
            lock.release()
        close_distributed(info)  # before the interpreter's finalization (engine/distributed.py)


def _run(job: Job, info: DistInfo, resume_from: Path | None, init_from: str, notes: list[str], seconds: dict) -> dict:
    cfg = job.cfg
    run_dir = Path(cfg.run_dir)
    lap = time.perf_counter()
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    startup_line(f"start-up: data ({job.data_source()})")
    data_notes = job.build_data(info)
    seconds["data"] = time.perf_counter() - lap
    startup_line("start-up: model and DeepSpeed engine" + (f" (weights from {init_from})" if init_from else ""))
    model, reports = job.build_model(info, init_from)
    num_params = sum(p.numel() for p in model.parameters())  # before ZeRO-3 partitions them
    max_steps = job.max_steps()
    engine, optimizer, scheduler = build_engine(model.to(info.device), cfg, info, max_steps, job.steps_per_epoch())
    state = TrainState()
    if resume_from is not None:
        state, load_notes = checkpoint.load(engine, cfg, info, resume_from, scheduler)
        notes = notes + load_notes
    logger = MetricsLogger(run_dir, info.is_main, max_steps, resume_step=state.step if resume_from else None)
    accumulation = cfg.train.accumulation(info.world_size)
    logger.print(
        f"vlbert_fast {__version__} | {job.describe()} | {num_params / 1e6:.2f} M parameters | world size "
        f"{info.world_size} | ZeRO-{cfg.engine.zero_stage} | accumulation {accumulation} | {max_steps} steps | "
        f"{cfg.train.precision} on {info.device}"
    )
    if resume_from is None and not init_from:
        logger.print(f"initialisation: random weights ({job.why_random()})")
    for line in reports + notes + ([logger.note] if logger.note else []) + data_notes:
        logger.print(line)
    if resume_from is not None:
        logger.print(
            f"resumed from {resume_from} at step {state.step} (epoch {state.epoch}, {state.consumed_samples} samples)"
        )
    seconds["engine"] = time.perf_counter() - lap - seconds["data"]
    # A checkpoint of this run needs no second copy; one from elsewhere (another run, a universal conversion) is saved
    # here at the end even if no step was trained, so the run directory holds its own.
    same_dir = resume_from is not None and resume_from.parent.resolve() == (run_dir / "checkpoints").resolve()
    run = Run(
        cfg, info, job, engine, optimizer, scheduler, PRECISIONS[cfg.train.precision], logger,
        FaultInjector(info.rank), state, max_steps, resume_from, state.step if same_dir else -1, seconds,
    )  # fmt: skip
    try:
        lap = time.perf_counter()
        _train(run)
        seconds["steps"] = time.perf_counter() - lap - seconds.get("evaluation", 0.0)
        return _finish(run)
    except Exception as exc:
        if info.world_size > 1 and not isinstance(exc, TrainingAborted) and is_comm_failure(exc):
            raise TrainingAborted(
                comm_failure_message(info, run.state.step + 1, cfg.engine.dist_timeout_s, exc)
            ) from exc
        raise
    finally:
        logger.close()


def _seed_after_resume(run: Run) -> None:
    """RNG states for the loop. Called after the data iterator exists, since creating it draws from torch's RNG."""
    cfg, info, state = run.cfg, run.info, run.state
    if state.rng is not None:
        checkpoint.set_rng_states(state.rng)
    elif run.resumed_from is not None:  # world size changed: no state to map, a fresh stream per rank and step
        torch.manual_seed(cfg.seed + 1 + info.rank + 7919 * state.step)
    else:
        torch.manual_seed(cfg.seed + 1 + info.rank)  # dropout differs per rank


def _epoch(job: Job, epoch: int, start_batch: int = 0) -> Iterator:
    """The loaded micro batches of `epoch` after its first `start_batch` (the sampler restarts there)."""
    job.data.set_epoch(epoch, start_batch)
    return iter(job.data.loader)


def _micro_batches(run: Run, loaded: Iterator) -> Iterator:
    """The micro batches on the device, from `loaded` (the resumed epoch's iterator) on, epoch after epoch; the
    data position (state.epoch, state.batch_in_epoch) follows them."""
    state, job = run.state, run.job
    while True:
        for item in loaded:
            state.batch_in_epoch += 1
            batch = job.on_device(item, run)
            if batch is not None:
                yield batch
        job.end_of_epoch(run)
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        loaded = _epoch(job, state.epoch)


def _train(run: Run) -> None:
    cfg, info, state, job = run.cfg, run.info, run.state, run.job
    accumulation = cfg.train.accumulation(info.world_size)
    batches = _micro_batches(run, _epoch(job, state.epoch, state.batch_in_epoch))
    _seed_after_resume(run)
    window = Window()
    local_samples = 0
    begin, seconds_before = time.perf_counter(), state.train_seconds
    tracker = StepTracker(0, loss_scale(run.engine), run.engine.skipped_steps)
    peak = peak_tflops(cfg.train.peak_tflops, info.device)
    saves = SaveSchedule(cfg.engine, run.max_steps, info.device)
    while state.step < run.max_steps:
        step = state.step + 1
        log_now = step % cfg.train.log_every == 0 or step == run.max_steps
        outcome = optimizer_step(run, batches, step, accumulation, window, log_now)
        local_samples += outcome.samples
        after_step(run, step, outcome, window, tracker)
        window = log_window(run, step, window, peak, log_now)
        state.train_seconds = seconds_before + time.perf_counter() - begin
        if step < run.max_steps and job.evaluate_now(step):
            window.start += _evaluate(run)  # the window's rates are the training's
        save_now, why = saves.due(step)
        if save_now:
            _save(run, local_samples, why)
            saves.saved()
            local_samples = 0
    state.consumed_samples += int(all_reduce_sum([local_samples], info.device)[0])
    job.end_of_training(run)


def _evaluate(run: Run, final: bool = False) -> float:
    """The job's evaluation at the current step; returns its wall time (the evaluation phase)."""
    start = time.perf_counter()
    run.job.evaluate(run, final)
    seconds = time.perf_counter() - start
    run.seconds["evaluation"] = run.seconds.get("evaluation", 0.0) + seconds
    return seconds


def _save(run: Run, local_samples: int, why: str = "the end of the run") -> None:
    tag_dir = checkpoint.save(run.engine, run.cfg, run.info, run.state, run.scheduler, local_samples, run.faults)
    run.saved_step = run.state.step
    run.logger.print(f"step {run.state.step}: checkpoint {tag_dir} ({why})")


def _finish(run: Run) -> dict:
    lap = time.perf_counter()
    if run.saved_step != run.state.step:
        _save(run, 0)
    run.seconds["checkpoint"] = time.perf_counter() - lap
    _evaluate(run, final=True)
    state, resumed = run.state, run.resumed_from
    own, lines = run.job.summary(run)
    phases = {name: run.seconds[name] for name in PHASES if name in run.seconds}
    summary = {
        "steps": state.step,
        "train_seconds": state.train_seconds,
        **own,
        "nonfinite_steps": state.nonfinite_steps,
        "resumed_from": None if resumed is None else str(resumed),
        "phase_seconds": phases,
        "checkpoint": str(Path(run.cfg.run_dir) / "checkpoints" / tag_for(state.step)),
    }
    if state.nonfinite_steps:
        lines.append(f"steps skipped for a non-finite loss or gradient: {state.nonfinite_steps}")
    if resumed is not None:
        lines.append(f"resumed from {resumed}")
    parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases.items())
    lines += [f"wall time {sum(phases.values()):.0f} s after start-up: {parts}", f"checkpoint: {summary['checkpoint']}"]
    if run.info.is_main:
        (Path(run.cfg.run_dir) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        run.logger.print("\n".join(["== summary ==", *lines]), stamp=False)
    return summary
