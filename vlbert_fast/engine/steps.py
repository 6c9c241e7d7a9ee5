"""One optimizer step on DeepSpeed, for the one training loop (engine/trainer.py) and every job.

`optimizer_step` runs the micro batches of one step (forward, the injected faults, backward, DeepSpeed's step with
accumulation, clipping, precision and ZeRO) and the non-finite guards of engine/guards.py; `after_step` steps the lr
schedule, counts non-finite steps (aborting after `engine.max_nonfinite_steps` in a row) and logs fp16 loss-scale
changes; `log_window` logs a window's metrics at a log step and starts the next window.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from . import checkpoint
from .distributed import all_reduce_sum
from .guards import TrainingAborted
from .job import Run
from .metrics import Window, memory_gb

# torch warns when the scheduler steps without an optimizer step: exactly a skipped (non-finite or fp16 overflow) step,
# which the loop logs itself. Set once here: a catch_warnings around every step reset Python's warnings registry each
# time, so every show-once warning of the process (DeepSpeed's deprecated all_gather_into_tensor under ZeRO-1/2, on
# torch 2.13) was printed again at every step on every rank.
warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")


def loss_scale(engine) -> float | None:
    if not engine.fp16_enabled():
        return None
    for name in ("loss_scale", "cur_scale"):
        value = getattr(engine.optimizer, name, None)
        if isinstance(value, (int, float, torch.Tensor)):
            return float(value)
    return None


def local_grad_norm(module: torch.nn.Module) -> float | None:
    """L2 norm of the gradients this rank holds, before clipping. Without ZeRO every rank holds all of them after
    the all-reduce, so it is the global norm; with ZeRO DeepSpeed's own global norm is used instead."""
    norms = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else None


@dataclass
class StepTracker:
    """What `after_step` carries from one step to the next."""

    nonfinite_in_a_row: int = 0
    scale: float | None = None
    skipped_by_deepspeed: int = 0


@dataclass
class StepOutcome:
    bad_total: int = 0
    """Micro batches with a non-finite loss, over all ranks."""
    grad_nonfinite: bool = False
    """The step's global gradient norm was not finite (the update was skipped on every rank)."""
    losses: list[tuple[torch.Tensor, dict]] = field(default_factory=list)
    samples: int = 0
    """Samples this rank trained on in the step."""


def optimizer_step(
    run: Run, batches: Iterator, step: int, accumulation: int, window: Window, log_now: bool
) -> StepOutcome:
    """The `accumulation` micro batches of optimizer step `step`, taken from `batches` (on the device); the job
    (engine/job.py) gives each one's (loss, parts) (`forward`) and (samples, tokens, FLOPs) for the log (`measure`)."""
    engine, info, faults, job = run.engine, run.info, run.faults, run.job
    bad = torch.zeros((), device=info.device)
    outcome = StepOutcome()
    for micro in range(accumulation):
        t0 = time.perf_counter()
        batch = next(batches)
        window.wait += time.perf_counter() - t0
        if micro == 0:
            faults.at("forward", step)
        loss, parts = job.forward(engine, batch)
        loss = faults.loss(loss, step)
        bad += (~torch.isfinite(loss.detach())).float()
        if micro == 0:
            faults.at("backward", step)
        engine.backward(loss)
        if micro == accumulation - 1:
            # One all-reduce per step: every rank skips the update if any rank saw a non-finite loss.
            outcome.bad_total = int(all_reduce_sum([float(bad)], info.device)[0])
            run.optimizer.skip_update = outcome.bad_total > 0
            if log_now:
                window.grad_norm = local_grad_norm(engine.module)  # engine.step() zeroes the gradients
        skipped_before = engine.skipped_steps
        run.optimizer.nonfinite_grad = None  # decided afresh by the step's first optimizer call (engine/guards.py)
        engine.step()
        if micro == accumulation - 1:
            # Ours (plain fp32 data parallel), or DeepSpeed's own skip of a non-finite norm (ZeRO, bf16); in fp16 a
            # DeepSpeed skip is the dynamic loss scale's overflow, which is expected and logged apart.
            ds_skipped = engine.skipped_steps != skipped_before and not engine.fp16_enabled()
            outcome.grad_nonfinite = bool(run.optimizer.nonfinite_grad) or ds_skipped
            faults.weights(engine.module, step)
        outcome.losses.append((loss, parts))
        samples, tokens, flops = job.measure(batch)
        window.samples += samples
        window.tokens += tokens
        window.flops += flops
        outcome.samples += samples
    return outcome


def after_step(run: Run, step: int, outcome: StepOutcome, window: Window, tracker: StepTracker) -> None:
    """The schedule, the non-finite bookkeeping and the fp16 loss-scale log of step `step` (module docstring)."""
    state, logger, engine = run.state, run.logger, run.engine
    run.scheduler.step()  # the schedule follows the step counter, skipped steps included
    state.step = step
    if outcome.bad_total or outcome.grad_nonfinite:
        tracker.nonfinite_in_a_row += 1
        state.nonfinite_steps += 1
        if outcome.bad_total:
            what = f"non-finite loss in {outcome.bad_total} micro batch(es) over the ranks"
        else:
            loss = sum(float(loss) for loss, _ in outcome.losses) / max(1, len(outcome.losses))
            what = f"non-finite gradient norm with a finite loss ({loss:.4f} on this rank)"
        logger.print(
            f"step {step}: {what}: update skipped on every rank ({tracker.nonfinite_in_a_row} in a row, "
            f"{state.nonfinite_steps} in total)"
        )
        limit = run.cfg.engine.max_nonfinite_steps
        if tracker.nonfinite_in_a_row >= limit:
            raise TrainingAborted(
                f"{tracker.nonfinite_in_a_row} steps in a row with a non-finite loss or gradient (steps "
                f"{step - tracker.nonfinite_in_a_row + 1}-{step}; engine.max_nonfinite_steps={limit}): aborting. "
                f"Lower the learning rate or check the data (model.check_inputs=true), then "
                f"{checkpoint.last_finite_checkpoint_advice(run.cfg)}"
            )
    else:
        tracker.nonfinite_in_a_row = 0
        for loss, parts in outcome.losses:
            window.add_losses(loss, parts)
    new_scale = loss_scale(engine)
    if new_scale is not None and (new_scale != tracker.scale or engine.skipped_steps != tracker.skipped_by_deepspeed):
        overflow = engine.skipped_steps != tracker.skipped_by_deepspeed
        logger.print(
            f"step {step}: fp16 "
            + ("gradient overflow, update skipped; " if overflow else "")
            + f"loss scale {tracker.scale:g} -> {new_scale:g}"
        )
    tracker.scale, tracker.skipped_by_deepspeed = new_scale, engine.skipped_steps


def log_window(run: Run, step: int, window: Window, peak: float | None, log_now: bool) -> Window:
    """After step `step`: the progress display advances; at a log step the window's metrics are logged and kept as the
    run's first (once) and last, and a fresh window is returned (otherwise `window` itself)."""
    run.logger.advance(step)
    window.steps += 1
    if not log_now:
        return window
    elapsed = time.perf_counter() - window.start
    samples, tokens, flops = all_reduce_sum([window.samples, window.tokens, window.flops], run.info.device)
    tflops = flops / elapsed / 1e12
    means = window.means()
    loss = means.pop("loss", float("nan"))  # nan: every step of the window was skipped
    grad = run.engine.get_global_grad_norm()  # None where DeepSpeed does not track it (fp32 without ZeRO)
    grad = window.grad_norm if grad is None else grad
    metrics = {
        "loss": loss,
        "losses": means,
        "lr": float(run.scheduler.get_last_lr()[0]),
        "grad_norm": None if grad is None else float(grad),
        "step_seconds": elapsed / max(1, window.steps),
        "samples_per_s": samples / elapsed,
        "tokens_per_s": tokens / elapsed,
        "tflops": tflops,
        "mfu": None if peak is None else tflops / (peak * run.info.world_size),
        "data_wait_share": window.wait / elapsed,
        "memory_gb": memory_gb(run.info.device),
        "loss_scale": loss_scale(run.engine),
        "overflow_steps": int(run.engine.skipped_steps) if run.engine.fp16_enabled() else None,
        "nonfinite_steps": run.state.nonfinite_steps,
    }
    run.logger.log(step, metrics)
    run.state.first_metrics = run.state.first_metrics or metrics
    run.state.last_metrics = metrics
    return Window()
