"""The DeepSpeed JSON, filled from our config at run time (one source of truth).

What DeepSpeed does not get: the optimizer and the learning-rate schedule (torch AdamW is passed in, fused on a GPU,
so no DeepSpeed op is built; the trainer steps the schedule itself so that it follows the step counter whatever the
precision or ZeRO stage), and activation checkpointing (the model checkpoints its own encoder layers with
torch.utils.checkpoint, a model config field; DeepSpeed's `activation_checkpointing` section only configures
deepspeed.checkpointing, which the model does not call).
"""

from __future__ import annotations

from ..config import RunConfig


class EngineConfigError(ValueError):
    """A combination of settings the engine cannot run; the message says why and what to use instead."""


def check_engine_config(cfg: RunConfig) -> None:
    if cfg.train.precision == "fp16" and cfg.engine.zero_stage == 0:
        # DeepSpeed 0.19's stage-0 fp16 wrapper for a client optimizer (FP16_UnfusedOptimizer) is never asked to
        # scale the loss by engine.backward, yet divides the gradients by the scale in step(): updates vanish.
        raise EngineConfigError(
            "train.precision=fp16 needs engine.zero_stage >= 1 (DeepSpeed's stage-0 fp16 path does not apply its "
            "loss scale to a client optimizer); ZeRO-1 costs nothing extra, even on one device"
        )


def gradient_accumulation(cfg: RunConfig, world_size: int) -> int:
    """Micro-batches per rank and optimizer step; the global batch must split evenly over ranks and micro-batches
    (a config error otherwise, found only once the world size is known)."""
    micro, total = cfg.train.micro_batch_size, cfg.train.global_batch_size
    per_step = micro * world_size
    if total % per_step:
        raise EngineConfigError(
            f"train.global_batch_size {total} is not a multiple of train.micro_batch_size {micro} x world size "
            f"{world_size} = {per_step}; {valid_batch_choices(total, micro, world_size)}"
        )
    return total // per_step


def valid_batch_choices(total: int, micro: int, world_size: int) -> str:
    """Settings that divide: the largest micro-batch up to `micro` for this global batch, or the nearest global
    batches for this micro-batch."""
    options = []
    if total % world_size == 0:
        per_rank = total // world_size
        fit = max(m for m in range(1, min(micro, per_rank) + 1) if per_rank % m == 0)
        options.append(f"train.micro_batch_size={fit} (accumulation {per_rank // fit})")
    per_step = micro * world_size
    below, above = (total // per_step) * per_step, -(-total // per_step) * per_step
    options += [f"train.global_batch_size={b}" for b in (below, above) if b > 0]
    return "use e.g. " + " or ".join(options)


def zero_section(cfg: RunConfig) -> dict:
    e = cfg.engine
    zero: dict = {"stage": e.zero_stage}
    if e.zero_stage == 0:
        return zero
    zero.update(
        overlap_comm=e.overlap_comm,
        contiguous_gradients=e.contiguous_gradients,
        reduce_bucket_size=e.reduce_bucket_size,
    )
    if e.zero_stage in (1, 2):
        zero.update(allgather_bucket_size=e.allgather_bucket_size, reduce_scatter=True)
    else:
        zero.update(
            stage3_prefetch_bucket_size=e.stage3_prefetch_bucket_size,
            stage3_param_persistence_threshold=e.stage3_param_persistence_threshold,
        )
    return zero


def deepspeed_config(cfg: RunConfig, world_size: int) -> dict:
    check_engine_config(cfg)
    train, e = cfg.train, cfg.engine
    config = {
        "train_batch_size": train.global_batch_size,
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": gradient_accumulation(cfg, world_size),
        "gradient_clipping": train.grad_clip,
        "bf16": {"enabled": train.precision == "bf16"},
        "fp16": {
            "enabled": train.precision == "fp16",
            "loss_scale": 0,  # 0: dynamic
            "initial_scale_power": e.fp16_initial_scale_power,
            "loss_scale_window": e.fp16_loss_scale_window,
            "hysteresis": e.fp16_hysteresis,
            "min_loss_scale": e.fp16_min_loss_scale,
        },
        "zero_optimization": zero_section(cfg),
        # The optimizer is torch AdamW with a skip switch for non-finite steps (engine/optim.py); DeepSpeed only
        # admits the exact torch classes under ZeRO unless told that another one is fine.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,  # we log ourselves
        "wall_clock_breakdown": False,
    }
    if e.load_universal:
        config["checkpoint"] = {"load_universal": True}
    return config
