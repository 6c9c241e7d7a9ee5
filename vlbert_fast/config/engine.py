"""How a run is executed, saved and resumed: ZeRO, loss scaling, checkpoints, resume, timeouts, fault policy.

None of these fields change what the model learns (except `zero_stage` for ZeRO-specific rounding in low precision),
so the whole section is left out of the config hash that guards a resume (config/config_hash.py).
"""

from __future__ import annotations

from dataclasses import dataclass

RESUME_KEYWORDS = ("auto", "never")


@dataclass
class EngineConfig:
    zero_stage: int = 0
    """DeepSpeed ZeRO stage: 0 plain data parallel, 1 optimizer states partitioned over ranks, 2 also gradients,
    3 also parameters (gathered layer by layer in forward and backward)."""

    overlap_comm: bool = False
    """ZeRO: overlap gradient reduction with the backward pass (worth it with NCCL on GPUs; gloo on CPU gains
    nothing)."""

    contiguous_gradients: bool = True
    """ZeRO: copy gradients into one contiguous buffer as they are produced (less fragmentation)."""

    reduce_bucket_size: int = 500_000_000
    """ZeRO: elements reduced at once."""

    allgather_bucket_size: int = 500_000_000
    """ZeRO 1/2: elements all-gathered at once after the optimizer step."""

    stage3_prefetch_bucket_size: int = 50_000_000
    """ZeRO-3: elements of parameters fetched ahead of use."""

    stage3_param_persistence_threshold: int = 100_000
    """ZeRO-3: parameters with fewer elements stay whole on every rank (biases, LayerNorms)."""

    fp16_initial_scale_power: int = 16
    """fp16: the dynamic loss scale starts at 2**this."""

    fp16_loss_scale_window: int = 1000
    """fp16: the loss scale doubles after this many steps without overflow."""

    fp16_hysteresis: int = 2
    """fp16: overflows tolerated before the scale is halved (each overflow still skips its update)."""

    fp16_min_loss_scale: float = 1.0
    """fp16: the loss scale never drops below this."""

    save_interval_steps: int = 0
    """Save a checkpoint every this many optimizer steps (0: no step rule; the run still saves at its end)."""

    save_interval_minutes: float = 0.0
    """Also save a checkpoint once this many minutes of wall-clock time have passed since the last save or the start
    (0: no clock rule). Decided collectively, so every rank saves at the same step (engine/save_schedule.py). The
    multi-GPU configs set both rules: a preempted run loses at most this long."""

    keep_last_k: int = 3
    """Complete checkpoints kept in run_dir/checkpoints; older ones (and unfinished saves) are deleted once a newer
    one is complete. 0 keeps every checkpoint."""

    resume: str = "auto"
    """"auto": continue from run_dir/checkpoints/latest when it exists, else start fresh; "never": start fresh; or
    the path of a checkpoint to continue from (a tag directory, a checkpoints directory or a run directory)."""

    init_from: str = ""
    """Weights only, for a fresh start (ignored when resuming): a run or checkpoint directory of ours, a directory
    written by `vlbert-fast export`, or a Hugging Face BERT directory (model.safetensors / pytorch_model.bin)."""

    trust_foreign: bool = False
    """Also load (resume from, or init_from) a checkpoint without a manifest of ours: DeepSpeed's universal
    conversion, a checkpoint of an older version, a bare .pt state dict. Its files cannot be verified against a
    manifest, so set it only for files you trust (`--trust-foreign` on the command line); they still load
    weights-only (tensors and plain values, never code)."""

    allow_config_change: bool = False
    """Resume even though the config differs from the checkpoint's (the differing keys are printed either way)."""

    load_universal: bool = False
    """The checkpoint to resume is a DeepSpeed universal checkpoint (made by deepspeed.checkpoint.ds_to_universal):
    it loads on any world size and ZeRO stage."""

    dist_timeout_s: float = 1800.0
    """Longest wait of a collective (and of the rendezvous) for the other ranks. A rank that dies or hangs makes the
    others fail with a message after at most this long (a dead peer is usually noticed at once)."""

    max_nonfinite_steps: int = 5
    """Abort after this many consecutive optimizer steps with a non-finite loss on some rank. Each such step is
    skipped on every rank (no update), counted and logged."""

    deterministic: bool = False
    """torch.use_deterministic_algorithms(True), cuDNN autotuning off, a fixed cuBLAS workspace: with
    `cpu_threads` fixed, a resumed run repeats the uninterrupted run's losses bit for bit on a CPU."""

    cpu_threads: int = 0
    """torch intra-op threads per rank. 0: on a machine without CUDA, torch's default less one per data-loader
    worker (at least 1), so training threads and workers do not fight over the cores; with CUDA, torch's default
    (torchrun and the deepspeed launcher set OMP_NUM_THREADS=1 when they start several ranks per machine). Fix it
    for reproducible CPU runs."""

    def __post_init__(self) -> None:
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_stage must be 0, 1, 2 or 3, found {self.zero_stage}")
        for name in ("reduce_bucket_size", "allgather_bucket_size", "stage3_prefetch_bucket_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, found {getattr(self, name)}")
        if self.stage3_param_persistence_threshold < 0:
            raise ValueError("stage3_param_persistence_threshold must be >= 0")
        if not 0 <= self.fp16_initial_scale_power <= 64:
            raise ValueError(f"fp16_initial_scale_power must be in 0..64, found {self.fp16_initial_scale_power}")
        if self.fp16_loss_scale_window < 1 or self.fp16_hysteresis < 1 or self.fp16_min_loss_scale <= 0:
            raise ValueError("fp16_loss_scale_window and fp16_hysteresis must be >= 1, fp16_min_loss_scale > 0")
        if self.save_interval_steps < 0 or self.keep_last_k < 0 or not self.save_interval_minutes >= 0:
            raise ValueError(
                "save_interval_steps, save_interval_minutes and keep_last_k must be >= 0, found "
                f"{self.save_interval_steps}, {self.save_interval_minutes}, {self.keep_last_k}"
            )
        if not self.resume:
            raise ValueError(f"resume must be one of {RESUME_KEYWORDS} or a checkpoint path, found ''")
        if self.dist_timeout_s <= 0:
            raise ValueError(f"dist_timeout_s must be positive, found {self.dist_timeout_s}")
        if self.max_nonfinite_steps < 1:
            raise ValueError(f"max_nonfinite_steps must be >= 1, found {self.max_nonfinite_steps}")
        if self.cpu_threads < 0:
            raise ValueError(f"cpu_threads must be >= 0, found {self.cpu_threads}")


def check_precision(precision: str, engine: EngineConfig) -> None:
    """The one combination of train.precision and the engine that cannot run (both roots call it)."""
    if precision == "fp16" and engine.zero_stage == 0:
        # DeepSpeed 0.19's stage-0 fp16 wrapper for a client optimizer (FP16_UnfusedOptimizer) is never asked to
        # scale the loss by engine.backward, yet divides the gradients by the scale in step(): updates vanish.
        raise ValueError(
            "train.precision=fp16 needs engine.zero_stage >= 1 (DeepSpeed's stage-0 fp16 path does not apply its "
            "loss scale to a client optimizer); ZeRO-1 costs nothing extra, even on one device"
        )
