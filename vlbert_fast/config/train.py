"""Optimisation and the training loop, one config for every job: `LoopConfig` holds what pretraining and fine-tuning
share (batch, optimizer, schedule, precision, logging), `TrainConfig` (pretraining, RunConfig.train) and
`FinetuneTrainConfig` (fine-tuning, config/finetune_run.py) add their own few fields and defaults. Defaults are the
embedded tiny run; configs/pretrain/*.yaml carry the original's Base and Large settings (AdamW, lr 2.56e-5 at batch
256, 16k warmup steps then linear decay, weight decay 1e-4 on every parameter, clipping at 10)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .config_files import ConfigError

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("linear", "step")


@dataclass
class LoopConfig:
    max_steps: int = 0
    """Optimizer steps of the run."""

    global_batch_size: int = 64
    """Rows (fine-tuning: samples) per optimizer step over all ranks."""

    micro_batch_size: int = 64
    """Rows (samples) per forward/backward on one rank; accumulation = global / (micro x world size)."""

    optimizer: str = "adamw"
    """"adamw" (pretraining, VQA, RefCOCO+) or "sgd" with momentum (the original's VCR)."""

    lr: float = 1e-3
    """Peak learning rate, reached after warmup; used as given (no hidden scaling by the batch size)."""

    warmup_steps: int = 60
    """Linear warmup from 0 to lr over these steps."""

    schedule: str = "linear"
    """After warmup: "linear" decay to 0 at the last step (the original's 'triangle'), or "step": lr x
    lr_step_factor at each epoch of lr_step_epochs (the original's VCR)."""

    lr_step_epochs: list[int] = field(default_factory=list)
    """Epochs (counted from 0) at whose start the "step" schedule multiplies the lr by lr_step_factor."""

    lr_step_factor: float = 0.1
    """Factor of each step of the "step" schedule."""

    weight_decay: float = 1e-4
    """Decoupled weight decay (AdamW) or L2 (SGD), on the parameters `weight_decay_all` says."""

    weight_decay_all: bool = False
    """True: every parameter decays, as the original's optimizers do (configs/pretrain/*.yaml, configs/finetune).
    False: biases, LayerNorm parameters and the learned [H] vectors ([IMG], [END], mask, text-only visual) do not
    (BERT's and Hugging Face's convention; the embedded defaults)."""

    momentum: float = 0.9
    """SGD momentum."""

    adam_beta1: float = 0.9
    """AdamW beta1."""

    adam_beta2: float = 0.999
    """AdamW beta2."""

    adam_eps: float = 1e-6
    """AdamW epsilon (the original's 1e-6)."""

    grad_clip: float = 10.0
    """Clip the global gradient norm to this (0: no clipping)."""

    precision: str = "fp32"
    """Parameter/compute precision: fp32, bf16, or fp16 (with DeepSpeed's dynamic loss scale, engine.fp16_*).
    bf16 and fp16 keep fp32 master weights in the optimizer."""

    log_every: int = 20
    """Write a log line, metrics.jsonl row and TensorBoard scalars every this many steps."""

    peak_tflops: float = 0.0
    """Peak TFLOP/s of one device for MFU; 0: from the table of known GPUs (model/flops.py), no MFU on a CPU."""

    def __post_init__(self) -> None:
        if self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, found {self.max_steps}")
        if self.micro_batch_size < 1 or self.global_batch_size < 1:
            raise ValueError("global_batch_size and micro_batch_size must be >= 1")
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} is not a multiple of micro_batch_size "
                f"{self.micro_batch_size}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, found {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, found {self.schedule!r}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("lr must be > 0; warmup_steps, weight_decay and grad_clip >= 0")
        if not 0 < self.lr_step_factor <= 1 or any(e < 0 for e in self.lr_step_epochs):
            raise ValueError("lr_step_factor must be in (0, 1] and lr_step_epochs >= 0")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), found {self.momentum}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be 'fp32', 'bf16' or 'fp16', found {self.precision!r}")
        if self.peak_tflops < 0:
            raise ValueError(f"peak_tflops must be >= 0, found {self.peak_tflops}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, found {self.log_every}")

    def accumulation(self, world_size: int) -> int:
        """Micro batches per rank and optimizer step. The global batch must split evenly over the ranks and micro
        batches: a ConfigError otherwise, found only once the world size is known, naming settings that divide."""
        total, micro, per_step = self.global_batch_size, self.micro_batch_size, self.micro_batch_size * world_size
        if total % per_step == 0:
            return total // per_step
        options = []
        if total % world_size == 0:  # the largest micro batch up to `micro` for this global batch
            per_rank = total // world_size
            fit = max(m for m in range(1, min(micro, per_rank) + 1) if per_rank % m == 0)
            options.append(f"train.micro_batch_size={fit} (accumulation {per_rank // fit})")
        below, above = (total // per_step) * per_step, -(-total // per_step) * per_step  # the nearest global batches
        options += [f"train.global_batch_size={b}" for b in (below, above) if b > 0]
        raise ConfigError(
            f"train.global_batch_size {total} is not a multiple of train.micro_batch_size {micro} x world size "
            f"{world_size} = {per_step}; use e.g. " + " or ".join(options)
        )


@dataclass
class TrainConfig(LoopConfig):
    """Pretraining's loop (RunConfig.train)."""

    max_steps: int = 1000
    """Optimizer steps of the run. The embedded default's 1000 are about where its model has learned to read the
    image (see model.visual_scale_text_init): masked colour/shape words 49.7% right against 22.8% with shuffled
    images after 800 steps, 51.5% against 21.7% after 900, 59.7% against 20.7% after 1000 (87 s on an idle 2-core
    machine, start-up and three evaluations included)."""

    from_scratch: bool = False
    """Start from random weights on purpose: `engine.init_from` is then not read (the Base/Large configs name a BERT
    directory there, as the original starts from BERT). The embedded default trains from scratch already: its
    synthetic vocabulary is not BERT's and it sets no init_from."""

    eval_batches: int = 16
    """Batches of held-out captions in each evaluation (0: no evaluation at all)."""

    eval_every_steps: int = 250
    """Also evaluate every this many steps during the run (0: only at the end): the masked colour/shape words (or,
    without probe words, the masked words) of held-out captions with the real and the shuffled images, logged and
    written to metrics.jsonl as val/real, val/shuffled, val/words. The embedded default's 250 shows the model
    learning to read the image (about 0.8 s each on 2 cores)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, found {self.max_steps}")
        if self.eval_batches < 0 or self.eval_every_steps < 0:
            raise ValueError(
                f"eval_batches and eval_every_steps must be >= 0, found {self.eval_batches}, {self.eval_every_steps}"
            )
