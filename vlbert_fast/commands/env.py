"""`vlbert-fast env`: versions, devices, built extensions, and the backend each op would pick here
(vlbert_fast/ops/environment.py)."""

from __future__ import annotations

HELP = "versions, devices, built extensions and the backend each op picks"
CONFIG = None


def add_arguments(parser) -> None:
    pass


def main(args, cfg=None) -> int:
    from ..ops.environment import report

    print(report())
    return 0
