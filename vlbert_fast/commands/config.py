"""`vlbert-fast config [--config FILE ...] [--task NAME] [KEY=VALUE ...]`: print any resolved config — pretraining
(the default), a fine-tuning task's (chosen by `--task`, a `task:` key in a file, or a `task=` override, and then
starting from that task's embedded default, as `finetune` does), or a template such as configs/zero/zero2.yaml laid
over either. The same resolution as the commands that run them (defaults, then files in order, then overrides)."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from ..config import ConfigError, RunConfig, load_config, to_yaml
from ..config.finetune_run import TASK_NAMES, FinetuneConfig

HELP = "print the resolved config of pretraining or of any fine-tuning task (files, then overrides)"
CONFIG = None  # chosen from the arguments: RunConfig or FinetuneConfig


def add_arguments(parser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="FILE", help="YAML files (later files win)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotlist overrides, e.g. train.lr=1e-4")
    parser.add_argument("--task", choices=TASK_NAMES, default=None, help="resolve this fine-tuning task's config")


def names_a_task(files: list[str], overrides: list[str]) -> bool:
    """Whether the arguments describe a fine-tuning config: a `task:` key in a file or a `task=` override."""
    for file in files:
        try:
            data = yaml.safe_load(Path(file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # load_config reports the file with its reason
        if isinstance(data, dict) and "task" in data:
            return True
    return any(o.split("=", 1)[0].strip() == "task" for o in overrides)


def main(args, cfg=None) -> int:
    from ..tasks import TASKS, task_defaults

    try:
        if args.task or names_a_task(args.config, args.overrides):
            extra = [f"task={args.task}"] if args.task else []
            named = args.task or next(
                (o.split("=", 1)[1].strip() for o in args.overrides if o.split("=", 1)[0].strip() == "task"), None
            )
            if named is None:  # the files name it: resolve once to learn which, then again over its default
                named = load_config(FinetuneConfig, args.config, args.overrides).task
            defaults = [task_defaults(named)] if named in TASKS else []
            resolved = load_config(FinetuneConfig, args.config, [*extra, *args.overrides], defaults=defaults)
        else:
            resolved = load_config(RunConfig, args.config, args.overrides)
    except ConfigError as exc:
        print(f"vlbert-fast config: config error: {exc}", file=sys.stderr)
        return 2
    print(to_yaml(resolved), end="")
    return 0
