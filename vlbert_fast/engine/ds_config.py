"""The DeepSpeed JSON, filled from our config at run time (one source of truth)."""

from __future__ import annotations

from ..config import RunConfig


def gradient_accumulation(cfg: RunConfig, world_size: int) -> int:
    per_step = cfg.train.micro_batch_size * world_size
    if cfg.train.global_batch_size % per_step:
        raise ValueError(
            f"train.global_batch_size {cfg.train.global_batch_size} is not a multiple of micro_batch_size "
            f"{cfg.train.micro_batch_size} x world size {world_size}"
        )
    return cfg.train.global_batch_size // per_step


def deepspeed_config(cfg: RunConfig, world_size: int) -> dict:
    train = cfg.train
    return {
        "train_batch_size": train.global_batch_size,
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": gradient_accumulation(cfg, world_size),
        "gradient_clipping": train.grad_clip,
        "bf16": {"enabled": train.precision == "bf16"},
        "fp16": {"enabled": False},
        "zero_optimization": {"stage": 0},
        "steps_per_print": 2**31 - 1,  # we log ourselves
        "wall_clock_breakdown": False,
    }
