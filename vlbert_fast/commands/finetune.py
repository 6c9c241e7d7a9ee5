"""`vlbert-fast finetune --task vqa|refcoco|vcr [--config FILE] [KEY=VALUE ...]`: fine-tune a pretrained VL-BERT on
a task. With no config: the task's embedded default, the tiny model fine-tuned on the synthetic version of the task
from the embedded pretraining run (runs/pretrain), on the CPU.

Exit codes: 0 done; 1 aborted (non-finite steps, a failed rank); 2 a config, data, checkpoint or weights the run
cannot use."""

from __future__ import annotations

import argparse
import sys

from ..config.finetune import TASK_NAMES, FinetuneConfig

HELP = "fine-tune on VQA v2, RefCOCO+ or VCR (no config: the task's embedded default on synthetic data)"
CONFIG = FinetuneConfig


def add_arguments(parser) -> None:
    parser.add_argument("--task", choices=TASK_NAMES, default=None, help="the task (sets `task`; default: vqa)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)


def config_overrides(args) -> list[str]:
    return [f"task={args.task}"] if args.task else []


def config_defaults(args) -> list[dict]:
    """The embedded default of the task named on the command line (before any YAML file)."""
    from ..tasks import TASKS, task_defaults

    name = args.task or "vqa"
    return [task_defaults(name)] if name in TASKS else []


def main(args, cfg: FinetuneConfig) -> int:
    from ..data.formats import FormatError
    from ..engine.checkpoint import CheckpointError
    from ..engine.ds_config import EngineConfigError
    from ..engine.finetune import finetune
    from ..engine.steps import TrainingAborted
    from ..model.pretrained import PretrainedError
    from ..tokenization import TokenizerError

    try:
        finetune(cfg)
    except TrainingAborted as exc:
        print(f"vlbert-fast finetune: aborted: {exc}", file=sys.stderr, flush=True)
        return 1
    except (
        CheckpointError,
        PretrainedError,
        EngineConfigError,
        FormatError,
        TokenizerError,
        FileNotFoundError,
        ValueError,
    ) as exc:
        print(f"vlbert-fast finetune: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0
