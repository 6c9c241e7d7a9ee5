"""The pretraining loop on DeepSpeed (`vlbert-fast pretrain`).

One way through: data (data/loader.py) -> Batch on the device -> engine(batch) -> engine.backward -> engine.step,
DeepSpeed doing accumulation, clipping, precision and ZeRO from the JSON our config fills (engine/ds_config.py).
Every `log_every` steps one log line, a metrics.jsonl row and TensorBoard scalars; every
`engine.save_interval_steps` steps, every `engine.save_interval_minutes` (engine/save_schedule.py) and at the end a
checkpoint (engine/checkpoint.py); every `train.eval_every_steps` and at the end the masked-word evaluation with real
and shuffled images; at the end summary.json. Each start-up phase prints a line as it begins.

Resume (engine.resume): model, optimizer, lr schedule, data position and every rank's RNG states come back, so the
continued run computes what the uninterrupted one would have (bit for bit on a CPU with engine.deterministic).
Faults: a non-finite loss on any rank, or a non-finite global gradient norm, skips that optimizer step on every rank
(engine/guards.py), and `engine.max_nonfinite_steps` of them in a row abort the run naming the last finite
checkpoint; a failed collective (a dead or hung rank) ends this rank with a message instead of a hang
(engine/distributed.py). One run at a time per run_dir (engine/run_lock.py).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import RunConfig, save_config
from ..data.formats import SkipCounter
from ..data.loader import PretrainData, build_pretrain_data
from ..model import ZERO3_LEAF_MODULES, VLBertForPretraining
from ..model.hf_bert import missing_bert_message
from ..model.pretrained import PretrainedError, init_weights_from
from ..version import __version__
from . import checkpoint
from .checkpoint import TrainState
from .distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_sum,
    comm_failure_message,
    init_distributed,
    is_comm_failure,
)
from .ds_config import check_engine_config, deepspeed_config, gradient_accumulation
from .evaluate import masked_word_accuracy
from .faults import FaultInjector
from .flops import batch_training_flops, peak_tflops
from .guards import attach
from .metrics import MetricsLogger, Window, format_summary, startup_line
from .optim import SkippableAdamW, build_optimizer, build_scheduler
from .run_lock import lock_run_dir
from .save_schedule import SaveSchedule
from .steps import StepTracker, TrainingAborted, after_step, log_window, optimizer_step


@dataclass
class Run:
    cfg: RunConfig
    info: DistInfo
    data: PretrainData
    engine: object
    optimizer: SkippableAdamW
    scheduler: torch.optim.lr_scheduler.LRScheduler
    dtype: torch.dtype
    logger: MetricsLogger
    faults: FaultInjector
    state: TrainState
    resumed_from: Path | None = None
    saved_step: int = -1
    epoch_skips: SkipCounter = field(default_factory=lambda: SkipCounter("skip"))
    """The distinct records skipped in the current epoch (data.counter holds the run's)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of this process's phases (`PHASES`), reported in summary.json and the summary."""
    last_eval: dict | None = None
    """The latest masked-word evaluation ({'real', 'shuffled', 'words'}), None before the first."""


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PHASES = ("distributed", "data", "engine", "steps", "checkpoint", "evaluation")
"""Phases of a run whose wall time summary.json (`phase_seconds`) and the summary report: the process group with
DeepSpeed's import (and the first run's build of its shared-memory op), the data (the synthetic world generated or
found in its cache, datasets, loader), the model and the DeepSpeed engine (and a resumed checkpoint), the steps, the
final checkpoint, the evaluation. Interpreter start-up and imports before `pretrain` are not in them."""


@dataclass
class Built:
    engine: object
    optimizer: SkippableAdamW
    scheduler: torch.optim.lr_scheduler.LRScheduler
    num_params: int
    reports: list[str]
    """What was loaded into the model: the `init_from` mapping report, the e2e ResNet's weight report."""


def build_engine(cfg: RunConfig, info: DistInfo, init_from: str = "") -> Built:
    """The model (seeded alike on every rank, optionally initialised from `init_from`), AdamW, the schedule, and the
    DeepSpeed engine around them."""
    import deepspeed

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = VLBertForPretraining(cfg.model)
    reports = [init_weights_from(model, init_from, cfg.engine.trust_foreign)] if init_from else []
    if model.vlbert.visual is not None and model.vlbert.visual.load_report is not None:  # e2e: what the ResNet loaded
        reports.append(str(model.vlbert.visual.load_report))
    num_params = sum(p.numel() for p in model.parameters())  # before ZeRO-3 partitions them
    model.to(info.device)
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train)
    if cfg.engine.zero_stage == 3:
        from deepspeed.utils import set_z3_leaf_modules

        set_z3_leaf_modules(model, list(ZERO3_LEAF_MODULES))
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=deepspeed_config(cfg, info.world_size)
    )
    attach(engine, optimizer)
    if info.world_size == 1 and cfg.engine.zero_stage == 0:
        # A lone rank has nothing to all-reduce; DeepSpeed would still flatten every gradient into one buffer, "sum"
        # it over one rank, divide by 1 and copy it back after each backward (about 4% of the embedded default's step).
        engine.enable_backward_allreduce = False
    return Built(engine, optimizer, scheduler, num_params, reports)


def initial_weights(cfg: RunConfig) -> str:
    """The weights a fresh run starts from: engine.init_from, or '' for a random start (train.from_scratch, or no
    init_from). A named directory that is missing is an error saying how to provide it, before any work."""
    if cfg.train.from_scratch or not cfg.engine.init_from:
        return ""
    if not Path(cfg.engine.init_from).exists():
        raise PretrainedError(missing_bert_message(cfg.engine.init_from))
    return cfg.engine.init_from


def pretrain(cfg: RunConfig) -> dict:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # dataloader workers fork after the tokenizer runs
    check_engine_config(cfg)
    run_dir = Path(cfg.run_dir)
    resume_notes: list[str] = []
    resume_from = checkpoint.resolve_resume(cfg, resume_notes)
    init_from = initial_weights(cfg) if resume_from is None else ""
    if resume_from is not None and checkpoint.is_complete(resume_from):
        checkpoint.check_config(cfg, checkpoint.read_marker(resume_from)["config"], resume_from)  # before any work
    started = time.perf_counter()
    startup_line(f"start-up: process group (DeepSpeed, world size {os.environ.get('WORLD_SIZE', '1')})")
    info = init_distributed(cfg.engine, data_workers=cfg.data.num_workers)
    gradient_accumulation(cfg, info.world_size)  # a global batch that does not divide: a config error, before any work
    lock = lock_run_dir(run_dir, info)
    notes = resume_notes + ([lock.note] if lock and lock.note else [])
    try:
        return _pretrain(
            cfg, info, run_dir, resume_from, init_from, notes, {"distributed": time.perf_counter() - started}
        )
    finally:
        if lock is not None:
            lock.release()


def _pretrain(
    cfg: RunConfig,
    info: DistInfo,
    run_dir: Path,
    resume_from: Path | None,
    init_from: str,
    notes: list[str],
    seconds: dict[str, float],
) -> dict:
    """The run after the process group and the run directory's lock; `seconds`: the phases' wall times so far."""
    lap = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal lap
        now = time.perf_counter()
        seconds[name] = seconds.get(name, 0.0) + now - lap
        lap = now

    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    where = cfg.data.root or "the synthetic world (generated into the cache on a first run)"
    startup_line(f"start-up: data from {where}")
    data = build_pretrain_data(cfg, info.rank, info.world_size)
    phase("data")
    startup_line("start-up: model and DeepSpeed engine" + (f" (weights from {init_from})" if init_from else ""))
    built = build_engine(cfg, info, init_from)
    engine, optimizer, scheduler = built.engine, built.optimizer, built.scheduler
    state = TrainState()
    if resume_from is not None:
        state, load_notes = checkpoint.load(engine, cfg, info, resume_from, scheduler)
        notes = notes + load_notes
    logger = MetricsLogger(
        run_dir, info.is_main, cfg.train.max_steps, resume_step=state.step if resume_from is not None else None
    )
    notes = notes + ([logger.note] if logger.note else []) + data.notes
    logger.print(
        f"vlbert_fast {__version__} | data {data.root} | {built.num_params / 1e6:.2f} M parameters | world size "
        f"{info.world_size} | ZeRO-{cfg.engine.zero_stage} | accumulation {gradient_accumulation(cfg, info.world_size)}"
        f" | {cfg.train.precision} on {info.device}"
    )
    if resume_from is None and not init_from:
        why = "train.from_scratch=true" if cfg.train.from_scratch else "engine.init_from is empty"
        logger.print(f"initialisation: random weights ({why})")
    for line in built.reports + notes:
        logger.print(line)
    phase("engine")
    if resume_from is not None:
        logger.print(
            f"resumed from {resume_from} at step {state.step} (epoch {state.epoch}, {state.consumed_samples} samples)"
        )
    run = Run(
        cfg,
        info,
        data,
        engine,
        optimizer,
        scheduler,
        DTYPES[cfg.train.precision],
        logger,
        FaultInjector(info.rank),
        state,
        resume_from,
        # A checkpoint of this run needs no second copy; one from elsewhere (another run, a universal conversion) is
        # saved here at the end even if no step was trained, so the run directory holds its own.
        saved_step=state.step
        if resume_from is not None and _same_dir(resume_from.parent, run_dir / "checkpoints")
        else -1,
        seconds=seconds,
    )
    try:
        lap = time.perf_counter()
        _train(run)
        seconds["steps"] = time.perf_counter() - lap - seconds.get("evaluation", 0.0)  # periodic ones apart
        return _finish(run)
    except Exception as exc:
        if info.world_size > 1 and not isinstance(exc, TrainingAborted) and is_comm_failure(exc):
            raise TrainingAborted(
                comm_failure_message(info, run.state.step + 1, cfg.engine.dist_timeout_s, exc)
            ) from exc
        raise
    finally:
        logger.close()


def _same_dir(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _seed_after_resume(run: Run) -> None:
    """RNG states for the loop. Called after the data iterator exists, since creating it draws from torch's RNG."""
    cfg, info, state = run.cfg, run.info, run.state
    if state.rng is not None:
        checkpoint.set_rng_states(state.rng)
    elif run.resumed_from is not None:  # world size changed: no state to map, a fresh stream per rank and step
        torch.manual_seed(cfg.seed + 1 + info.rank + 7919 * state.step)
    else:
        torch.manual_seed(cfg.seed + 1 + info.rank)  # dropout differs per rank


def _next_batch(run: Run, batches):
    """The next micro batch that holds rows, moving to the next epoch when this one ends."""
    state, data = run.state, run.data
    while True:
        try:
            loaded = next(batches)
        except StopIteration:
            _report_skips(run)
            state.epoch += 1
            state.batch_in_epoch = 0
            data.set_epoch(state.epoch)
            batches = iter(data.loader)
            continue
        state.batch_in_epoch += 1
        for skipped in loaded.skipped:
            run.epoch_skips.handle(skipped.error)
            data.counter.handle(skipped.error)
        if loaded.batch is not None:
            return loaded.batch, batches


def _train(run: Run) -> None:
    cfg, info, state = run.cfg, run.info, run.state
    accumulation = gradient_accumulation(cfg, info.world_size)
    run.data.set_epoch(state.epoch, state.batch_in_epoch)
    batches = iter(run.data.loader)
    _seed_after_resume(run)
    window = Window()
    local_samples = 0
    begin, seconds_before = time.perf_counter(), state.train_seconds
    tracker = StepTracker.start(run.engine)
    peak = peak_tflops(cfg.train.peak_tflops, info.device)
    saves = SaveSchedule(cfg.engine, cfg.train.max_steps, info.device)
    eval_every = cfg.train.eval_every_steps

    def next_batch():
        nonlocal batches
        batch, batches = _next_batch(run, batches)
        return batch.to(info.device, dtype=run.dtype, non_blocking=True)

    def forward(batch):
        out = run.engine(batch)
        return out.loss, out.losses

    def measure(batch):
        return batch.num_samples, int(batch.attention_mask.sum()), batch_training_flops(cfg.model, batch)

    while state.step < cfg.train.max_steps:
        step = state.step + 1
        log_now = step % cfg.train.log_every == 0 or step == cfg.train.max_steps
        outcome = optimizer_step(run, step, accumulation, next_batch, forward, measure, window, log_now)
        local_samples += outcome.samples
        after_step(run, step, outcome, window, tracker)
        window = log_window(run, step, window, peak, log_now)
        state.train_seconds = seconds_before + time.perf_counter() - begin
        if eval_every and step % eval_every == 0 and step < cfg.train.max_steps:
            window.start += _evaluate(run)  # the window's rates are the training's
        save_now, why = saves.due(step)
        if save_now:
            _save(run, local_samples, why)
            saves.saved()
            local_samples = 0
    state.consumed_samples += int(all_reduce_sum([local_samples], info.device)[0])
    _report_skips(run)
    counters = all_gather_objects(run.data.counter, info)  # every rank takes part in the gather
    for other in counters[1:]:
        run.data.counter.merge(other)  # distinct records over every rank (a record two ranks met counts once)


def _save(run: Run, local_samples: int, why: str = "the end of the run") -> None:
    tag_dir = checkpoint.save(run.engine, run.cfg, run.info, run.state, run.scheduler, local_samples, run.faults)
    run.saved_step = run.state.step
    run.logger.print(f"step {run.state.step}: checkpoint {tag_dir} ({why})")


def _evaluate(run: Run, final: bool = False) -> float:
    """The masked-word probe on held-out captions (engine/evaluate.py) at the current step, every `train.
    eval_every_steps` and at the end: a metrics.jsonl row ({"step", "time", "val/real", "val/shuffled",
    "val/words"}), TensorBoard scalars and, except at the end (the summary says it), a log line. Nothing without a
    validation split or with train.eval_batches=0. Every rank runs it (under ZeRO-3 the forward gathers parameters
    from all of them). Returns its wall time, which is added to the evaluation phase."""
    cfg, state = run.cfg, run.state
    if run.data.val is None or cfg.train.eval_batches <= 0:
        return 0.0
    start = time.perf_counter()
    accuracy = masked_word_accuracy(
        run.engine.module,
        run.data.val,
        run.data.probe_words,
        batch_records=max(2, cfg.train.micro_batch_size // 2),
        max_batches=cfg.train.eval_batches,
        device=run.info.device,
        dtype=run.dtype,
        seed=cfg.seed,
    )
    seconds = time.perf_counter() - start
    run.seconds["evaluation"] = run.seconds.get("evaluation", 0.0) + seconds
    run.last_eval = accuracy
    run.logger.log_eval(state.step, accuracy)
    if not final:
        what = "colour/shape words" if run.data.probe_words else "masked words"
        run.logger.print(
            f"eval step {state.step} | {what} on {accuracy['words']} held-out words: {100 * accuracy['real']:.1f}% "
            f"with the real images, {100 * accuracy['shuffled']:.1f}% shuffled | {seconds:.1f} s"
        )
    return seconds


def _report_skips(run: Run) -> None:
    """At the end of an epoch: the distinct records skipped in it (on this rank); the next epoch counts afresh."""
    if run.epoch_skips.total:
        run.logger.print(f"epoch {run.state.epoch}: {run.epoch_skips.report()}")
    run.epoch_skips = SkipCounter("skip")


def _finish(run: Run) -> dict:
    cfg, info, state = run.cfg, run.info, run.state
    run_dir = Path(cfg.run_dir)
    lap = time.perf_counter()
    if run.saved_step != state.step:
        _save(run, 0)
    run.seconds["checkpoint"] = time.perf_counter() - lap
    run.seconds.setdefault("evaluation", 0.0)
    _evaluate(run, final=True)
    accuracy = run.last_eval

    def losses(m: dict | None) -> dict | None:
        return None if m is None else {"loss": m["loss"], **m["losses"]}

    summary = {
        "steps": state.step,
        "epochs": state.epoch + 1,
        "train_seconds": state.train_seconds,
        "phase_seconds": {name: run.seconds[name] for name in PHASES if name in run.seconds},
        "consumed_samples": state.consumed_samples,
        "first_losses": losses(state.first_metrics),
        "final_losses": losses(state.last_metrics),
        "masked_word_accuracy": accuracy,
        "probe_words": run.data.probe_words,
        "skipped_records": run.data.counter.total,
        "nonfinite_steps": state.nonfinite_steps,
        "resumed_from": None if run.resumed_from is None else str(run.resumed_from),
        "checkpoint": str(run_dir / "checkpoints" / checkpoint.tag_for(state.step)),
    }
    if info.is_main:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        run.logger.print(format_summary(summary), stamp=False)
    return summary


__all__ = ["TrainingAborted", "build_engine", "pretrain"]
