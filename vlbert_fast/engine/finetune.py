"""The fine-tuning loop on DeepSpeed (`vlbert-fast finetune --task ...`).

One way through, as pretraining (engine/trainer.py) and with its pieces: the task's samples (tasks/) ->
`collate_task` -> TaskBatch on the device -> engine(task_batch) -> the head's logits -> the task's loss ->
engine.backward / engine.step (steps.py: accumulation, clipping, precision, ZeRO, non-finite skips, faults). The
model is VLBertModel + the task's head (model/finetune.py), initialised from a pretraining run, checkpoint or export
with a key-mapping report. Every rank takes its own shard of each global batch (`EpochSampler`); evaluation runs at
the end of every epoch (or every `train.eval_every_steps`) and at the end on the task's val split, each rank
predicting its shard and the predictions gathered, scored with the task's official metric. At the end: a
checkpoint, the val predictions in the task's official format and summary.json.

Resume (engine.resume): model, optimizer, schedule, data position and RNG states come back from the checkpoint
(engine/checkpoint.py); the evaluations before the resume stay in metrics.jsonl, summary.json lists those after it.
The guards against non-finite losses, gradients and weights, and the run_dir lock, are pretraining's
(engine/guards.py, engine/steps.py, engine/run_lock.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ..config import save_config
from ..config.finetune import FinetuneConfig
from ..model.finetune import build_finetune_model
from ..model.pretrained import PretrainedError
from ..tasks import build_task, collate_task
from ..version import __version__
from . import checkpoint
from .checkpoint import TrainState
from .distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    comm_failure_message,
    init_distributed,
    is_comm_failure,
)
from .ds_config import check_engine_config, deepspeed_config, gradient_accumulation
from .faults import FaultInjector
from .flops import batch_training_flops, peak_tflops
from .guards import attach
from .metrics import MetricsLogger, Window, startup_line
from .optim import build_finetune_optimizer, build_finetune_scheduler
from .predict import predict_split
from .run_lock import lock_run_dir
from .save_schedule import SaveSchedule
from .steps import StepTracker, TrainingAborted, after_step, log_window, optimizer_step

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class EpochSampler(Sampler):
    """Micro batches of sample indices for one rank. Each epoch is a permutation of the training samples seeded by
    (seed, epoch); global batch j is its slice [j G, (j+1) G), and rank r's micro batch m of it is the slice of
    `micro` samples at (m W + r) x micro. The samples after the last whole global batch are left out that epoch."""

    def __init__(self, num_samples: int, micro: int, global_batch: int, rank: int, world_size: int, seed: int):
        self.num_samples, self.micro, self.global_batch = num_samples, micro, global_batch
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.accumulation = global_batch // (micro * world_size)
        self.steps_per_epoch = num_samples // global_batch
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return self.steps_per_epoch * self.accumulation - self.start_batch

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        for b in range(self.start_batch, self.steps_per_epoch * self.accumulation):
            step, m = divmod(b, self.accumulation)
            begin = step * self.global_batch + (m * self.world_size + self.rank) * self.micro
            yield order[begin : begin + self.micro].tolist()


@dataclass
class FinetuneRun:
    cfg: FinetuneConfig
    info: DistInfo
    task: object
    train_set: object
    val_set: object
    sampler: EpochSampler
    loader: DataLoader
    engine: object
    optimizer: object
    scheduler: object
    dtype: torch.dtype
    logger: MetricsLogger
    faults: FaultInjector
    state: TrainState
    max_steps: int
    resumed_from: Path | None = None
    saved_step: int = -1
    evals: list[dict] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------------
# evaluation


def _evaluate(run: FinetuneRun, final: bool = False) -> dict:
    engine, cfg = run.engine, run.cfg
    engine.eval()
    start = time.perf_counter()
    predictions = predict_split(
        engine, run.task, run.val_set, run.info, cfg.train.eval_batch_size, run.dtype, cfg.train.num_workers
    )
    engine.train()
    metrics = run.task.metrics(predictions, "val")
    state = run.state
    row = {"step": state.step, "epoch": state.step / run.sampler.steps_per_epoch, "split": "val", **metrics}
    run.evals.append(row)
    text = ", ".join(f"{k} {100 * v:.2f}%" for k, v in metrics.items())
    run.logger.print(
        f"eval step {state.step} (epoch {row['epoch']:.2f}) | val ({len(predictions)} samples): {text} | "
        f"{time.perf_counter() - start:.1f} s"
    )
    logger = run.logger
    if logger.enabled:
        logger.write_row(
            {
                "time": time.time(),
                **{k: v for k, v in row.items() if k != "split"},
                **{f"val/{k}": v for k, v in metrics.items()},
            }
        )
        for k, v in metrics.items():
            logger.tb.add_scalar(f"val/{k}", v, state.step)
        if final:
            out = Path(cfg.run_dir) / "predictions"
            row["predictions"] = str(run.task.write_predictions(predictions, "val", out))
    return row


# ----------------------------------------------------------------------------------------------------------------------
# setup


def _init_message(cfg: FinetuneConfig, exc: Exception) -> str:
    return (
        f"{exc}\ninit_from must name a pretraining run, checkpoint or export of ours (or a BERT directory): run "
        f"`vlbert-fast pretrain` first (it writes runs/pretrain), set init_from=PATH, or init_from='' to fine-tune "
        f"from random weights"
    )


def _build(cfg: FinetuneConfig, info: DistInfo, resume_from: Path | None, notes: list[str]) -> FinetuneRun:
    run_dir = Path(cfg.run_dir)
    # The main rank first: it generates the synthetic data and writes the answer vocabulary the others then read.
    startup_line(f"start-up: {cfg.task} data (the synthetic task is generated into the cache on a first run)")
    if not info.is_main:
        barrier()
    task = build_task(cfg, run_dir)
    if info.is_main:
        barrier()
    train_set, val_set = task.datasets("train"), task.datasets("val")
    accumulation = gradient_accumulation(cfg, info.world_size)
    sampler = EpochSampler(
        len(train_set), cfg.train.micro_batch_size, cfg.train.global_batch_size, info.rank, info.world_size, cfg.seed
    )
    if sampler.steps_per_epoch < 1:
        raise ValueError(
            f"the training split has {len(train_set)} samples, fewer than one global batch "
            f"(train.global_batch_size={cfg.train.global_batch_size})"
        )
    max_steps = cfg.train.max_steps or cfg.train.epochs * sampler.steps_per_epoch
    loader = DataLoader(
        train_set,
        batch_sampler=sampler,
        collate_fn=partial(collate_task, task),
        num_workers=cfg.train.num_workers,
    )
    import deepspeed

    torch.manual_seed(cfg.seed)  # the same fresh head on every rank
    init_from = cfg.init_from if resume_from is None else ""
    startup_line("start-up: model and DeepSpeed engine" + (f" (weights from {init_from})" if init_from else ""))
    try:
        model, report = build_finetune_model(cfg.model, task, init_from, cfg.engine.trust_foreign)
    except (PretrainedError, FileNotFoundError) as exc:
        raise PretrainedError(_init_message(cfg, exc)) from exc
    num_params = sum(p.numel() for p in model.parameters())
    model.to(info.device)
    optimizer = build_finetune_optimizer(model, cfg.train)
    scheduler = build_finetune_scheduler(optimizer, cfg.train, max_steps, sampler.steps_per_epoch)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=deepspeed_config(cfg, info.world_size)
    )
    attach(engine, optimizer)
    state = TrainState()
    if resume_from is not None:
        state, load_notes = checkpoint.load(engine, cfg, info, resume_from, scheduler)
        notes = notes + load_notes
    logger = MetricsLogger(run_dir, info.is_main, max_steps, resume_step=state.step if resume_from else None)
    notes = notes + ([logger.note] if logger.note else [])
    held_out = "" if not getattr(task.opts, "trainval", False) else " (trainval: val is also trained on, not held out)"
    logger.print(
        f"vlbert_fast {__version__} | finetune {cfg.task} on {task.root} | train {len(train_set)}, "
        f"val {len(val_set)} samples{held_out} | {num_params / 1e6:.2f} M parameters | world size {info.world_size} | "
        f"ZeRO-{cfg.engine.zero_stage} | accumulation {accumulation} | {max_steps} steps ({sampler.steps_per_epoch} "
        f"per epoch) | {cfg.train.precision} on {info.device}"
    )
    if report is not None:
        logger.print(str(report))
    elif resume_from is None:
        logger.print("init_from is empty: every weight starts from random initialisation")
    for line in notes:
        logger.print(line)
    if resume_from is not None:
        logger.print(f"resumed from {resume_from} at step {state.step} (epoch {state.epoch})")
    same_dir = resume_from is not None and resume_from.parent.resolve() == (run_dir / "checkpoints").resolve()
    return FinetuneRun(
        cfg,
        info,
        task,
        train_set,
        val_set,
        sampler,
        loader,
        engine,
        optimizer,
        scheduler,
        DTYPES[cfg.train.precision],
        logger,
        FaultInjector(info.rank),
        state,
        max_steps,
        resume_from,
        saved_step=state.step if same_dir else -1,
    )


def finetune(cfg: FinetuneConfig) -> dict:
    """Runs the fine-tuning job of `cfg`; returns the summary (also written to run_dir/summary.json)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cfg = dataclasses.replace(cfg, run_dir=cfg.resolved_run_dir)
    check_engine_config(cfg)
    run_dir = Path(cfg.run_dir)
    notes: list[str] = []
    resume_from = checkpoint.resolve_resume(cfg, notes)
    if resume_from is not None and checkpoint.is_complete(resume_from):
        checkpoint.check_config(cfg, checkpoint.read_marker(resume_from)["config"], resume_from)
    if resume_from is None and cfg.init_from and not Path(cfg.init_from).exists():  # say so before any work
        raise PretrainedError(
            _init_message(cfg, FileNotFoundError(f"init_from={cfg.init_from}: no such file or directory"))
        )
    startup_line(f"start-up: process group (DeepSpeed, world size {os.environ.get('WORLD_SIZE', '1')})")
    info = init_distributed(cfg.engine)
    lock = lock_run_dir(run_dir, info)
    try:
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, run_dir / "config.yaml")
        run = _build(cfg, info, resume_from, notes + ([lock.note] if lock and lock.note else []))
        try:
            _train(run)
            return _finish(run)
        except Exception as exc:
            if info.world_size > 1 and not isinstance(exc, TrainingAborted) and is_comm_failure(exc):
                raise TrainingAborted(
                    comm_failure_message(info, run.state.step + 1, cfg.engine.dist_timeout_s, exc)
                ) from exc
            raise
        finally:
            run.logger.close()
    finally:
        if lock is not None:
            lock.release()


# ----------------------------------------------------------------------------------------------------------------------
# the loop


def _seed(run: FinetuneRun) -> None:
    if run.state.rng is not None:
        checkpoint.set_rng_states(run.state.rng)
    else:  # a fresh stream per rank (and per step after a resume on another world size): dropout differs per rank
        torch.manual_seed(run.cfg.seed + 1 + run.info.rank + 7919 * run.state.step)


def _train(run: FinetuneRun) -> None:
    cfg, info, state = run.cfg, run.info, run.state
    accumulation = run.sampler.accumulation
    run.sampler.set_epoch(state.epoch, state.batch_in_epoch)
    batches = iter(run.loader)
    _seed(run)
    window = Window()
    local_samples = 0
    begin, seconds_before = time.perf_counter(), state.train_seconds
    tracker = StepTracker.start(run.engine)
    peak = peak_tflops(cfg.train.peak_tflops, info.device)
    steps_per_epoch = run.sampler.steps_per_epoch
    eval_every = cfg.train.eval_every_steps or steps_per_epoch
    saves = SaveSchedule(cfg.engine, run.max_steps, info.device)

    def next_batch():
        nonlocal batches
        try:
            task_batch = next(batches)
        except StopIteration:
            state.epoch += 1
            state.batch_in_epoch = 0
            run.sampler.set_epoch(state.epoch)
            batches = iter(run.loader)
            task_batch = next(batches)
        state.batch_in_epoch += 1
        return task_batch.to(info.device, run.dtype)

    def forward(task_batch):
        loss = run.task.loss(run.engine(task_batch), task_batch.targets)
        return loss, {cfg.task: loss}

    def measure(task_batch):
        b = task_batch.batch
        return len(task_batch.meta), int(b.attention_mask.sum()), batch_training_flops(cfg.model, b)

    while state.step < run.max_steps:
        step = state.step + 1
        log_now = step % cfg.train.log_every == 0 or step == run.max_steps
        outcome = optimizer_step(run, step, accumulation, next_batch, forward, measure, window, log_now)
        local_samples += outcome.samples
        after_step(run, step, outcome, window, tracker)
        window = log_window(run, step, window, peak, log_now)
        state.train_seconds = seconds_before + time.perf_counter() - begin
        if step % eval_every == 0 and step < run.max_steps:
            _evaluate(run)
        save_now, why = saves.due(step)
        if save_now:
            _save(run, local_samples, why)
            saves.saved()
            local_samples = 0
    state.consumed_samples += int(all_reduce_sum([local_samples], info.device)[0])


def _save(run: FinetuneRun, local_samples: int, why: str = "the end of the run") -> None:
    tag_dir = checkpoint.save(run.engine, run.cfg, run.info, run.state, run.scheduler, local_samples, run.faults)
    run.saved_step = run.state.step
    run.logger.print(f"step {run.state.step}: checkpoint {tag_dir} ({why})")


def _finish(run: FinetuneRun) -> dict:
    cfg, state = run.cfg, run.state
    run_dir = Path(cfg.run_dir)
    if run.saved_step != state.step:
        _save(run, 0)
    final = _evaluate(run, final=True)

    def losses(m: dict | None) -> float | None:
        return None if m is None else m["loss"]

    summary = {
        "task": cfg.task,
        "steps": state.step,
        "epochs": state.step / run.sampler.steps_per_epoch,
        "train_samples": len(run.train_set),
        "val_samples": len(run.val_set),
        "train_seconds": state.train_seconds,
        "first_loss": losses(state.first_metrics),
        "final_loss": losses(state.last_metrics),
        "val": {k: v for k, v in final.items() if k not in ("step", "epoch", "split", "predictions")},
        "evals": run.evals,
        "predictions": final.get("predictions"),
        "init_from": cfg.init_from if run.resumed_from is None else None,
        "resumed_from": None if run.resumed_from is None else str(run.resumed_from),
        "nonfinite_steps": state.nonfinite_steps,
        "checkpoint": str(run_dir / "checkpoints" / checkpoint.tag_for(state.step)),
    }
    if run.info.is_main:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        lines = [
            "== summary ==",
            f"fine-tuned {cfg.task} for {state.step} steps ({summary['epochs']:.2f} epochs) in "
            f"{state.train_seconds:.0f} s; loss {summary['first_loss']:.3f} (first log window) -> "
            f"{summary['final_loss']:.3f}",
            "val: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in summary["val"].items()),
            f"predictions: {summary['predictions']}",
            f"checkpoint: {summary['checkpoint']}",
        ]
        run.logger.print("\n".join(lines), stamp=False)
    return summary


__all__ = ["EpochSampler", "finetune", "predict_split"]
