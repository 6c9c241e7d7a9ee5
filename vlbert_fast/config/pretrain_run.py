"""The root config of a run: one field per component, each its own dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field

from .data import DataConfig
from .engine import EngineConfig, check_precision
from .model import ModelConfig
from .train import TrainConfig


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The VL-BERT model (sizes, dropout, visual path)."""

    data: DataConfig = field(default_factory=DataConfig)
    """Pretraining data, masking and batching."""

    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation and the training loop."""

    run_dir: str = "runs/pretrain"
    """Where the run writes config.yaml, metrics.jsonl, TensorBoard events and checkpoints/."""

    seed: int = 0
    """Seed for parameters, data order, masking and dropout."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    """Execution: ZeRO stage, loss scaling, checkpoints and resume, distributed timeouts, fault policy."""

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, found {self.seed}")
        check_precision(self.train.precision, self.engine)
