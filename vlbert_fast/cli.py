"""`vlbert-fast ...` and `python -m vlbert_fast ...`: parse, resolve the config, delegate to vlbert_fast/commands.

Commands that take a config accept `--config FILE` (repeatable; YAML that overrides the defaults), dotlist
overrides as positional arguments (`model.hidden_size=256`), `--print-config` (print the resolved config and
exit) and `--help-config` (every field with its type, default and documentation).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .config import ConfigError, RunConfig, describe, load_config, to_yaml
from .version import __version__


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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    env = sub.add_parser("env", help="versions, devices, built extensions and the backend each op picks")
    env.set_defaults(handler="env")

    demo = sub.add_parser("demo", help="train the configured model a few steps on random batches")
    _add_config_args(demo)
    demo.add_argument("--steps", type=int, default=10, help="optimizer steps (default 10)")
    demo.add_argument("--batch-size", type=int, default=8, help="samples per batch (default 8)")
    demo.set_defaults(handler="demo")

    config = sub.add_parser("config", help="print the resolved config (same options as every command)")
    _add_config_args(config)
    config.set_defaults(handler="config")
    return parser


def resolve_config(args: argparse.Namespace) -> RunConfig:
    return load_config(RunConfig, args.config, args.overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.handler == "env":
        from .commands import env

        return env.main(args)
    if getattr(args, "help_config", False):
        for key, type_name, default, doc in describe(RunConfig):
            print(f"{key}: {type_name} = {default}\n    {doc}")
        return 0
    try:
        cfg = resolve_config(args)
    except ConfigError as exc:
        print(f"vlbert-fast: config error: {exc}", file=sys.stderr)
        return 2
    if args.print_config or args.handler == "config":
        print(to_yaml(cfg), end="")
        return 0
    if args.handler == "demo":
        from .commands import demo

        return demo.main(cfg, args)
    raise AssertionError(f"unhandled command {args.handler}")


if __name__ == "__main__":
    sys.exit(main())
