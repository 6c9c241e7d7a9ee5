"""`vlbert-fast extract-features --input FILE... --out DIR`: region features of your own images and boxes, computed by
the visual branch (model.visual: ResNet C4 -> RoIAlign -> res5 -> average pool, in eval mode), written as our feature
shards (what `pretrain` reads) and/or the original's per-image region JSONs. The inputs (CC .jsonl, boxes .jsonl/.json,
bottom-up-attention .tsv): data/formats/image_box_inputs.py; the extraction: model/region_feature_extraction.py. Output:
DIR/index.json + shard files (`--format shards`, the default), DIR/json/<name>.json (`json`), or both. Bad images and
boxes stop the run with a message naming the file, or with --skip-bad are skipped and counted.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..config import RunConfig
from ..data.formats.shard_layout import DTYPES
from .convert_features import add_soft_label_argument

HELP = "compute region features of images + boxes with the ResNet branch (into shards and/or region JSONs)"
CONFIG = RunConfig


def add_arguments(parser) -> None:
    parser.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="FILE",
        help="CC .jsonl, boxes .jsonl/.json, or .tsv (repeatable)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--format", choices=("shards", "json", "both"), default="shards", help="what to write")
    parser.add_argument(
        "--root", type=Path, help="folder the image and frcnn specs are relative to (default: the input's)"
    )
    parser.add_argument("--image-pattern", default="{image_id}.jpg", help="image spec of a .tsv's image_id")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    parser.add_argument("--max-boxes", type=int, default=100, help="boxes kept per image, in the input's order")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="compute precision")
    parser.add_argument("--dtype", choices=DTYPES, default="float16", help="storage of features in the shards")
    add_soft_label_argument(parser)
    parser.add_argument("--skip-bad", action="store_true", help="skip and count bad images and records")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished extraction in --out")


def main(args, cfg: RunConfig) -> int:
    from ..data.formats import FormatError, SkipCounter
    from ..model.region_feature_extraction import extract_features

    if args.batch_size < 1 or args.max_boxes < 1 or (args.soft_labels_topk or 1) < 1:
        print(
            "vlbert-fast extract-features: --batch-size, --max-boxes and --soft-labels-topk must be >= 1",
            file=sys.stderr,
        )
        return 2
    counter = SkipCounter("skip" if args.skip_bad else "raise")
    out = Path(args.out)
    try:
        result = extract_features(
            args.input, out, cfg.model.visual, counter, write=args.format, root=args.root,
            image_pattern=args.image_pattern, batch_size=args.batch_size, max_boxes=args.max_boxes,
            device=args.device, precision=args.precision, dtype=args.dtype, soft_labels_topk=args.soft_labels_topk,
            overwrite=args.overwrite, log=lambda line: print(line, file=sys.stderr),
        )  # fmt: skip
    except (FormatError, FileExistsError) as exc:
        print(f"vlbert-fast extract-features: error: {exc}", file=sys.stderr)
        if counter.total:
            print(counter.report(), file=sys.stderr)
        return 2  # unusable data (commands/exit_codes.py)
    print(f"extracted {result['records']} images into {out} ({args.format})")
    for key, value in result.items():
        print(f"  {key}: {value}")
    print(counter.report())
    return 0
