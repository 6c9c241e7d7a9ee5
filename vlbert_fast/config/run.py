"""The root config of a run: one field per component, each its own dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field

from .model import ModelConfig


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The VL-BERT model (sizes, dropout, visual path)."""

    seed: int = 0
    """Seed for parameters, data order and dropout."""

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, found {self.seed}")
