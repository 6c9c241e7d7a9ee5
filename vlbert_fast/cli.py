"""`vlbert-fast ...` and `python -m vlbert_fast ...`: parse, resolve the config, delegate to vlbert_fast/commands.

Each command is a module in vlbert_fast/commands with `HELP`, `CONFIG` (the root config dataclass it takes, or
None), `add_arguments(parser)` and `main(args, cfg) -> int`; adding a command is one line in COMMANDS.

Commands that take a config accept `--config FILE` (repeatable; YAML that overrides the defaults), dotlist
overrides as positional arguments (`model.hidden_size=256`), `--print-config` (print the resolved config and
exit) and `--help-config` (every field with its type, default and documentation).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .config import ConfigError, describe, load_config, to_yaml
from .version import __version__

COMMANDS = [
    "env",
    "config",
    "synth",
    "convert-features",
    "extract-features",
    "pretrain",
    "export",
    "convert-checkpoint",
    "attention-maps",
    "bench",
    "finetune",
    "evaluate",
]


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML file overriding the defaults (repeatable; later files win)",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotlist overrides, e.g. model.hidden_size=256"
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--help-config", action="store_true", help="list every config field and exit")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlbert-fast", description="Fast VL-BERT pretraining and fine-tuning.")
    parser.add_argument("--version", action="version", version=f"vlbert_fast {__version__}")
    # `deepspeed --module vlbert_fast ...` puts --local_rank=N before the command; the rank comes from LOCAL_RANK.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f".commands.{name.replace('-', '_')}", __package__)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        if module.CONFIG is not None:
            _add_config_args(cmd)
        module.add_arguments(cmd)
        cmd.set_defaults(module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = args.module
    cfg = None
    if module.CONFIG is not None:
        if args.help_config:
            for key, type_name, default, doc in describe(module.CONFIG):
                print(f"{key}: {type_name} = {default}\n    {doc}")
            return 0
        try:
            # A command may add overrides of its own options (finetune's --task) and defaults they select.
            extra = module.config_overrides(args) if hasattr(module, "config_overrides") else []
            defaults = module.config_defaults(args) if hasattr(module, "config_defaults") else []
            cfg = load_config(module.CONFIG, args.config, [*extra, *args.overrides], defaults=defaults)
        except ConfigError as exc:
            print(f"vlbert-fast {args.command}: config error: {exc}", file=sys.stderr)
            return 2
        if args.print_config:
            print(to_yaml(cfg), end="")
            return 0
    return module.main(args, cfg)


if __name__ == "__main__":
    sys.exit(main())
