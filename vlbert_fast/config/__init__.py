"""Typed configuration: dataclasses per component, YAML overrides, dotlist overrides (see loader.py)."""

from .config_files import ConfigError, describe, field_docs, load_config, parse_dotlist, save_config, to_dict, to_yaml
from .data import DataConfig
from .engine import EngineConfig
from .model import ModelConfig
from .pretrain_run import RunConfig
from .synth_world import SynthConfig
from .train import TrainConfig
from .visual import VisualConfig

__all__ = [
    "ConfigError",
    "DataConfig",
    "EngineConfig",
    "SynthConfig",
    "TrainConfig",
    "VisualConfig",
    "ModelConfig",
    "RunConfig",
    "describe",
    "field_docs",
    "load_config",
    "parse_dotlist",
    "save_config",
    "to_dict",
    "to_yaml",
]
