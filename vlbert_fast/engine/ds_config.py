"""What DeepSpeed is told about a run: its JSON, filled from our config at run time (one source of truth), and under
ZeRO-3 the modules it must gather whole (`mark_zero3_leaves`), for every job.

What DeepSpeed does not get: the optimizer and the learning-rate schedule (torch AdamW is passed in, fused on a GPU,
so no DeepSpeed op is built; the trainer steps the schedule itself so that it follows the step counter whatever the
precision or ZeRO stage), and activation checkpointing (the model checkpoints its own encoder layers with
torch.utils.checkpoint, a model config field; DeepSpeed's `activation_checkpointing` section only configures
deepspeed.checkpointing, which the model does not call).
"""

from __future__ import annotations

import torch

from ..config import RunConfig
from ..model import ZERO3_LEAF_MODULES


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
    train, e = cfg.train, cfg.engine
    config = {
        "train_batch_size": train.global_batch_size,
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": train.accumulation(world_size),
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


def mark_zero3_leaves(model: torch.nn.Module, cfg: RunConfig) -> None:
    """Under ZeRO-3, before deepspeed.initialize: the modules of ZERO3_LEAF_MODULES (model/vlbert.py) that `model`
    holds are gathered whole when they run."""
    if cfg.engine.zero_stage == 3:
        from deepspeed.utils import set_z3_leaf_modules

        set_z3_leaf_modules(model, list(ZERO3_LEAF_MODULES))
