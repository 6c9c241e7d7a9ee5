"""The root config of a fine-tuning run (`vlbert-fast finetune --task ...`): the model, the task and its options,
optimisation, execution. The dataclass defaults are the embedded VQA default: the tiny model of the embedded
pretraining default, fine-tuned on the synthetic VQA from that run's checkpoint (runs/pretrain), on the CPU in about
a minute. Each task may register overrides for its own embedded default (tasks/__init__.py), applied before any
YAML file; configs/finetune/*.yaml carry the original's settings for Base and Large.

The global batch is explicit: `train.lr` is the learning rate used, never multiplied by the batch size. (The
original's configs state a per-sample rate that its code multiplies by the total batch; our configs state the
product.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .engine import EngineConfig
from .model import ModelConfig
from .tasks import RefCOCOOptions, VCROptions, VQAOptions

TASK_NAMES = ("vqa", "refcoco", "vcr")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("linear", "step")


@dataclass
class FinetuneTrainConfig:
    epochs: int = 4
    """Passes over the training split. The run is `epochs` x (training samples // global_batch_size) optimizer
    steps, unless max_steps is set (the original's VQA: 5 epochs)."""

    max_steps: int = 0
    """Optimizer steps of the run; 0: derived from `epochs`. When set, it wins and epochs only counts the passes."""

    global_batch_size: int = 64
    """Samples per optimizer step over all ranks (a VCR sample holds its 4 choices as 4 rows)."""

    micro_batch_size: int = 64
    """Samples per forward/backward on one rank; accumulation = global / (micro x world size)."""

    optimizer: str = "adamw"
    """"adamw" (VQA, RefCOCO+) or "sgd" with momentum (the original's VCR)."""

    lr: float = 1e-3
    """Peak learning rate, reached after warmup; used as given (no scaling by the batch size)."""

    warmup_steps: int = 20
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
    """True: every parameter decays, as the original's optimizers do (configs/finetune/*.yaml). False: biases,
    LayerNorms and learned vectors do not (BERT's convention; the embedded defaults)."""

    momentum: float = 0.9
    """SGD momentum."""

    adam_beta1: float = 0.9
    """AdamW beta1."""

    adam_beta2: float = 0.999
    """AdamW beta2."""

    adam_eps: float = 1e-6
    """AdamW epsilon (the original's 1e-6)."""

    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0: no clipping; the original's VQA: 1.0)."""

    precision: str = "fp32"
    """fp32, bf16, or fp16 (with DeepSpeed's dynamic loss scale, engine.fp16_*)."""

    log_every: int = 20
    """Write a log line, a metrics.jsonl row and TensorBoard scalars every this many steps."""

    eval_every_steps: int = 0
    """Evaluate on the validation split every this many steps; 0: at the end of every epoch. Always at the end."""

    eval_batch_size: int = 128
    """Samples per evaluation forward on one rank."""

    num_workers: int = 0
    """DataLoader worker processes per rank (0: load in the training process)."""

    peak_tflops: float = 0.0
    """Peak TFLOP/s of one device for MFU; 0: from the table of known GPUs, no MFU on a CPU."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.max_steps < 0:
            raise ValueError(f"epochs must be >= 1 and max_steps >= 0, found {self.epochs} and {self.max_steps}")
        if self.micro_batch_size < 1 or self.global_batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("global_batch_size, micro_batch_size and eval_batch_size must be >= 1")
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
        if self.log_every < 1 or self.eval_every_steps < 0 or self.num_workers < 0 or self.peak_tflops < 0:
            raise ValueError("log_every must be >= 1; eval_every_steps, num_workers and peak_tflops >= 0")


@dataclass
class FinetuneConfig:
    task: str = "vqa"
    """The task: "vqa" (VQA v2), "refcoco" (RefCOCO+) or "vcr" (VCR); its options are the section of that name."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The VL-BERT model; its architecture must match init_from's (the error lists the fields that differ)."""

    vqa: VQAOptions = field(default_factory=VQAOptions)
    """VQA v2 options (used when task is "vqa")."""

    refcoco: RefCOCOOptions = field(default_factory=RefCOCOOptions)
    """RefCOCO+ options (used when task is "refcoco")."""

    vcr: VCROptions = field(default_factory=VCROptions)
    """VCR options (used when task is "vcr")."""

    train: FinetuneTrainConfig = field(default_factory=FinetuneTrainConfig)
    """Optimisation, schedule, evaluation cadence."""

    init_from: str = "runs/pretrain"
    """Pretrained weights: a pretraining run or checkpoint directory of ours, an export (`vlbert-fast export`), or a
    Hugging Face BERT directory; empty: random initialisation (a baseline). The default is where the embedded
    `vlbert-fast pretrain` writes. Ignored when resuming."""

    run_dir: str = ""
    """Where the run writes config.yaml, metrics.jsonl, TensorBoard events, checkpoints/, predictions and
    summary.json; empty: runs/finetune_<task>."""

    seed: int = 0
    """Seed of the head's initialisation, the data order and dropout."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    """Execution: ZeRO stage, loss scaling, checkpoints and resume, distributed timeouts, fault policy
    (engine.init_from is not used here: see init_from)."""

    def __post_init__(self) -> None:
        if self.task not in TASK_NAMES:
            raise ValueError(f"task must be one of {TASK_NAMES}, found {self.task!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, found {self.seed}")
        if self.engine.init_from:
            raise ValueError("engine.init_from is not read by fine-tuning: set init_from (top level) instead")

    @property
    def resolved_run_dir(self) -> str:
        return self.run_dir or f"runs/finetune_{self.task}"

    @property
    def options(self) -> VQAOptions | RefCOCOOptions | VCROptions:
        """The options section of the configured task."""
        return getattr(self, self.task)
