"""`vlbert-fast finetune --task vqa|refcoco|vcr [--config FILE] [KEY=VALUE ...]`: fine-tune a pretrained VL-BERT on
a task. With no config: the task's embedded default, the tiny model fine-tuned on the synthetic version of the task
from the embedded pretraining run (runs/pretrain), on the CPU.

Exit codes (commands/exit_codes.py): 0 done; 1 aborted (non-finite steps or weights, a failed rank); 2 a config,
data, checkpoint, weights or run directory the run cannot use."""

from __future__ import annotations

import argparse

from ..config.finetune_run import TASK_NAMES, FinetuneConfig
from .trust import TRUST_FOREIGN_HELP

HELP = "fine-tune on VQA v2, RefCOCO+ or VCR (no config: the task's embedded default on synthetic data)"
CONFIG = FinetuneConfig


def add_arguments(parser) -> None:
    parser.add_argument("--task", choices=TASK_NAMES, default=None, help="the task (sets `task`; default: vqa)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--trust-foreign", action="store_true", help=TRUST_FOREIGN_HELP)


def config_overrides(args) -> list[str]:
    return [f"task={args.task}"] * bool(args.task) + ["engine.trust_foreign=true"] * args.trust_foreign


def config_defaults(args) -> list[dict]:
    """The embedded default of the task named on the command line (before any YAML file)."""
    from ..tasks import TASKS, task_defaults

    name = args.task or "vqa"
    return [task_defaults(name)] if name in TASKS else []


def main(args, cfg: FinetuneConfig) -> int:
    from ..engine.finetune_job import finetune
    from .exit_codes import run_job

    # ValueError too: a task's own checks of its data and config (e.g. fewer samples than one global batch)
    return run_job("finetune", lambda: finetune(cfg), extra=(ValueError,))
