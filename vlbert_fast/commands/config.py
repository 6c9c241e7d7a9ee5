"""`vlbert-fast config`: print the resolved run config (defaults, then --config files, then overrides)."""

from __future__ import annotations

from ..config import RunConfig, to_yaml

HELP = "print the resolved config (the same options as every command that takes one)"
CONFIG = RunConfig


def add_arguments(parser) -> None:
    pass


def main(args, cfg: RunConfig) -> int:
    print(to_yaml(cfg), end="")
    return 0
