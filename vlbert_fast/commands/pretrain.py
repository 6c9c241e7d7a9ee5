"""`vlbert-fast pretrain`: the main job. With no arguments: the embedded default, a tiny VL-BERT pretrained on the
synthetic world on CPU in a few minutes, ending with the evidence that it reads the image.

Exit codes (commands/exit_codes.py): 0 done; 1 aborted (too many non-finite steps, non-finite weights, or another
rank failed: the message says which); 2 a config, data, checkpoint or run directory the run cannot use (e.g. a resume
whose config changed, a malformed record in strict mode, a run_dir another run holds)."""

from __future__ import annotations

import argparse

from ..config import RunConfig
from .trust import TRUST_FOREIGN_HELP

HELP = "pretrain VL-BERT (no arguments: the embedded default on the synthetic world)"
CONFIG = RunConfig


def add_arguments(parser) -> None:
    # The deepspeed launcher passes --local_rank; the rank is read from the environment (LOCAL_RANK) either way.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--trust-foreign", action="store_true", help=TRUST_FOREIGN_HELP)


def config_overrides(args) -> list[str]:
    return ["engine.trust_foreign=true"] if args.trust_foreign else []


def main(args, cfg: RunConfig) -> int:
    from ..engine.pretrain_job import pretrain
    from .exit_codes import run_job

    return run_job("pretrain", lambda: pretrain(cfg))
