"""`vlbert-fast pretrain`: the main job. With no arguments: the embedded default, a tiny VL-BERT pretrained on the
synthetic world on CPU in a few minutes, ending with the evidence that it reads the image.

Exit codes: 0 done; 1 aborted (too many non-finite steps, or another rank failed: the message says which);
2 a config, data or checkpoint the run cannot use (e.g. a resume whose config changed)."""

from __future__ import annotations

import argparse
import sys

from ..config import RunConfig

HELP = "pretrain VL-BERT (no arguments: the embedded default on the synthetic world)"
CONFIG = RunConfig


def add_arguments(parser) -> None:
    # The deepspeed launcher passes --local_rank; the rank is read from the environment (LOCAL_RANK) either way.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)


def main(args, cfg: RunConfig) -> int:
    from ..data.loader import DataConfigError
    from ..engine.checkpoint import CheckpointError
    from ..engine.ds_config import EngineConfigError
    from ..engine.trainer import TrainingAborted, pretrain
    from ..model.pretrained import PretrainedError

    try:
        pretrain(cfg)
    except TrainingAborted as exc:
        print(f"vlbert-fast pretrain: aborted: {exc}", file=sys.stderr, flush=True)
        return 1
    except (CheckpointError, PretrainedError, DataConfigError, EngineConfigError) as exc:
        print(f"vlbert-fast pretrain: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0
