"""`vlbert-fast convert-features INPUT... --out DIR`: region features in the formats others ship (a bottom-up-attention
TSV, folders or zips of region JSONs, the region JSONs a Conceptual Captions file's `frcnn` specs name, or shards to
convert again), into our memory-mapped shards (data/formats/shard_layout.py). The inputs and their keys:
data/formats/region_inputs.py."""

from __future__ import annotations

import sys
from pathlib import Path

from ..data.formats.shard_layout import DTYPES

HELP = "convert region features (bottom-up TSV, region JSON folders/zips, CC .jsonl frcnn refs) into shards"
CONFIG = None


def add_arguments(parser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help=".tsv, region-JSON folder, .zip, or CC .jsonl")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory of the shards")
    parser.add_argument("--max-boxes", type=int, default=100, help="boxes kept per image, most confident first")
    parser.add_argument("--dtype", choices=DTYPES, default="float16", help="storage of features and classes")
    parser.add_argument("--shard-size", type=int, default=4096, help="records per shard (default 4096)")
    add_soft_label_argument(parser)
    parser.add_argument("--root", type=Path, help="folder the specs of a .jsonl are relative to (default: its own)")
    parser.add_argument("--skip-bad", action="store_true", help="skip and count malformed records instead of failing")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished conversion in --out")


def add_soft_label_argument(parser) -> None:
    parser.add_argument(
        "--soft-labels-topk",
        type=int,
        metavar="K",
        help="store each box's K likeliest classes, renormalised, instead of all (default: all; README, differences "
        "from the original)",
    )


def main(args, cfg) -> int:
    from ..data.formats import FormatError, SkipCounter
    from ..data.formats.region_inputs import convert_region_inputs

    if args.soft_labels_topk is not None and args.soft_labels_topk < 1:
        print("vlbert-fast convert-features: --soft-labels-topk must be >= 1", file=sys.stderr)
        return 2
    counter = SkipCounter("skip" if args.skip_bad else "raise")
    options = dict(max_boxes=args.max_boxes, dtype=args.dtype, shard_size=args.shard_size, overwrite=args.overwrite)
    try:
        result = convert_region_inputs(
            args.inputs, args.out, args.root, counter, soft_labels_topk=args.soft_labels_topk, **options
        )
    except (FormatError, FileExistsError, ValueError) as exc:  # ValueError: a setting the data cannot take
        print(f"vlbert-fast convert-features: error: {exc}", file=sys.stderr)
        print(f"vlbert-fast convert-features: no index written; {args.out} is not a usable conversion", file=sys.stderr)
        if counter.total:
            print(counter.report(), file=sys.stderr)
        return 2  # unusable data (commands/exit_codes.py)
    print(f"wrote {result['records']} records in {result['shards']} shards to {args.out} ({result['bytes']} bytes)")
    for key, value in result.items():
        print(f"  {key}: {value}")
    print(counter.report())
    return 0
