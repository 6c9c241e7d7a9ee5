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

from .engine import EngineConfig, check_precision
from .model import ModelConfig
from .tasks import RefCOCOOptions, VCROptions, VQAOptions
from .train import LoopConfig

TASK_NAMES = ("vqa", "refcoco", "vcr")


@dataclass
class FinetuneTrainConfig(LoopConfig):
    """Fine-tuning's loop (FinetuneConfig.train): the shared fields of LoopConfig (config/train.py) with fine-tuning's
    defaults, and the epochs, evaluation and data workers."""

    max_steps: int = 0
    """Optimizer steps of the run; 0: derived from `epochs`. When set, it wins and epochs only counts the passes."""

    warmup_steps: int = 20
    """Linear warmup from 0 to lr over these steps."""

    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0: no clipping; the original's VQA: 1.0)."""

    epochs: int = 4
    """Passes over the training split. The run is `epochs` x (training samples // global_batch_size) optimizer
    steps, unless max_steps is set (the original's VQA: 5 epochs)."""

    eval_every_steps: int = 0
    """Evaluate on the validation split every this many steps; 0: at the end of every epoch. Always at the end."""

    eval_batch_size: int = 128
    """Samples per evaluation forward on one rank."""

    num_workers: int = 0
    """DataLoader worker processes per rank (0: load in the training process)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epochs < 1 or self.eval_batch_size < 1:
            raise ValueError(f"epochs and eval_batch_size must be >= 1, found {self.epochs}, {self.eval_batch_size}")
        if self.eval_every_steps < 0 or self.num_workers < 0:
            raise ValueError("eval_every_steps and num_workers must be >= 0")


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
        check_precision(self.train.precision, self.engine)

    @property
    def resolved_run_dir(self) -> str:
        return self.run_dir or f"runs/finetune_{self.task}"

    @property
    def options(self) -> VQAOptions | RefCOCOOptions | VCROptions:
        """The options section of the configured task."""
        return getattr(self, self.task)
