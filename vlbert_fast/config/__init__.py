"""Typed configuration: dataclasses per component, YAML overrides, dotlist overrides (see loader.py)."""

from .loader import ConfigError, describe, field_docs, load_config, parse_dotlist, save_config, to_dict, to_yaml
from .model import ModelConfig
from .run import RunConfig

__all__ = [
    "ConfigError",
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
