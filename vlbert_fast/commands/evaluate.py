"""`vlbert-fast evaluate [--task T] RUN_OR_CHECKPOINT [--split val|test|...] [--out DIR]`: predictions of a
fine-tuned model on a split, written in the task's official format (VQA: the results JSON of the evaluation
server), and the official metrics where the split has annotations (printed and saved as metrics_<split>.json).

Reads the run's config from the checkpoint, consolidates its weights (any ZeRO stage, any world size) and runs on
one device (a GPU when there is one), without DeepSpeed."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..config.finetune_run import TASK_NAMES
from .trust import TRUST_FOREIGN_HELP

HELP = "predict a split with a fine-tuned run; write the official prediction file and the metrics"
CONFIG = None


def add_arguments(parser) -> None:
    parser.add_argument("source", help="a fine-tuning run directory, its checkpoints/ directory, or a tag directory")
    parser.add_argument("--task", choices=TASK_NAMES, default=None, help="check that the run fine-tuned this task")
    parser.add_argument("--split", default="val", help="val, test, or a split name of the task (e.g. testA)")
    parser.add_argument("--out", default=None, help="output directory (default: RUN/eval/<split>)")
    parser.add_argument("--batch-size", type=int, default=128, help="samples per forward")
    parser.add_argument("--trust-foreign", action="store_true", help=TRUST_FOREIGN_HELP)


def main(args, cfg) -> int:
    import torch

    from ..config import ConfigError
    from ..data.formats import FormatError
    from ..model.safe_load import WeightsFileError
    from ..tasks.finetuned import load_finetuned, predict_share

    start = time.perf_counter()
    notes: list[str] = []
    try:
        loaded = load_finetuned(args.source, args.trust_foreign, args.task, notes)
        model, task, ft_cfg, tag_dir = loaded.model, loaded.task, loaded.cfg, loaded.checkpoint
        run_dir = tag_dir.parent.parent
        dataset = task.datasets(args.split)
    except (WeightsFileError, ConfigError, FormatError, FileNotFoundError, ValueError) as exc:
        print(*notes, f"vlbert-fast evaluate: {exc}", sep="\n", file=sys.stderr)
        return 2
    for note in notes:
        print(note, file=sys.stderr)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    predictions = [p for _, p in predict_share(model, task, dataset, 0, 1, args.batch_size, device, torch.float32)]
    out = Path(args.out) if args.out else run_dir / "eval" / args.split
    path = task.write_predictions(predictions, args.split, out)
    metrics = task.metrics(predictions, args.split)
    (out / f"metrics_{args.split}.json").write_text(
        json.dumps({"checkpoint": str(tag_dir), "split": args.split, "samples": len(predictions), **metrics}, indent=2)
        + "\n"
    )
    print(f"{ft_cfg.task} {args.split}: {len(predictions)} predictions -> {path} ({time.perf_counter() - start:.1f} s)")
    if metrics:
        print(", ".join(f"{k} {100 * v:.2f}%" for k, v in metrics.items()))
    else:
        print(f"{args.split} has no annotations here: no metrics (submit {path.name} to the task's server)")
    return 0
