"""`vlbert-fast pretrain`: the main job. With no arguments: the embedded default, a tiny VL-BERT pretrained on the
synthetic world on CPU in a few minutes, ending with the evidence that it reads the image."""

from __future__ import annotations

import argparse

from ..config import RunConfig

HELP = "pretrain VL-BERT (no arguments: the embedded default on the synthetic world)"
CONFIG = RunConfig


def add_arguments(parser) -> None:
    # The deepspeed launcher passes --local_rank; the rank is read from the environment (LOCAL_RANK) either way.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)


def main(args, cfg: RunConfig) -> int:
    from ..engine.trainer import pretrain

    pretrain(cfg)
    return 0
