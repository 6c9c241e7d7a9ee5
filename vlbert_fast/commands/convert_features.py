"""`vlbert-fast convert-features INPUT... --out DIR`: region features in the formats others ship, into our
memory-mapped shards (vlbert_fast/data/formats/shard_layout.py).

Each INPUT is, by its form:
- a directory with index.json: feature shards, of this format version (to convert again, e.g. into top-k soft
  labels or float16) or of version 1 (padded; key: the same image ids);
- `*.tsv`: a bottom-up-attention TSV (key: the image_id column);
- a directory: every `*.json` under it is one region JSON (key: its image_id field);
- `*.zip`: every `*.json` member is one region JSON (key: its image_id field);
- `*.jsonl`, or a `*.json` whose first line is a caption object: a Conceptual Captions file; the region JSON each
  `frcnn` spec points to is converted once (key: the frcnn spec itself, `CaptionRecord.feature_key`, since that is
  what a dataset reading the captions has in hand). Specs are relative to `--root`, by default the file's folder.
- any other `*.json`: one region JSON.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from ..data.formats import (
    FormatError,
    RegionRecord,
    SkipCounter,
    convert_to_shards,
    iter_bua_tsv,
    iter_cc_jsonl,
    read_bytes,
    read_region_json,
)
from ..data.formats.paths import list_members
from ..data.formats.shard_layout import DTYPES, INDEX_NAME
from ..data.formats.shard_reader import FeatureShards
from ..data.formats.shards_padded import PaddedFeatureShards, is_padded_directory

HELP = "convert region features (bottom-up TSV, region JSON folders/zips, CC .jsonl frcnn refs) into shards"
CONFIG = None


def _guarded(counter: SkipCounter, read, *args, **kwargs) -> RegionRecord | None:
    """read(*args, **kwargs), or None when it raised FormatError and the counter skips it."""
    try:
        return read(*args, **kwargs)
    except FormatError as err:
        counter.handle(err)
        return None


def _region_from_spec(spec: str, root: Path, source: str) -> RegionRecord:
    return read_region_json(read_bytes(spec, root), source=source)


def _is_caption_file(path: Path) -> bool:
    with open(path, "rb") as handle:
        for raw in handle:
            if raw.strip():
                try:
                    first = json.loads(raw)
                except ValueError:
                    return False
                return isinstance(first, dict) and "caption" in first
    return False


def _iter_captions(path: Path, root: Path, counter: SkipCounter, stats: dict) -> Iterator[tuple[str, RegionRecord]]:
    seen: set[str] = set()
    for caption in iter_cc_jsonl(path, counter):
        key = caption.feature_key
        if key is None:
            stats["captions_without_frcnn"] += 1
            continue
        if key in seen:  # several captions of one image share its regions
            continue
        seen.add(key)
        source = f"{key} (root {root})"
        record = _guarded(counter, _region_from_spec, key, root, source)
        if record is not None:
            yield source, dataclasses.replace(record, image_id=key)


def _iter_shards(path: Path, counter: SkipCounter) -> Iterator[tuple[str, RegionRecord]]:
    if is_padded_directory(path):
        shards = PaddedFeatureShards(path)
    else:
        shards = FeatureShards(path, on_bad_record=counter.on_error)
    for i in range(len(shards)):
        record = _guarded(counter, shards.record_at, i)
        if record is not None:
            yield f"{path}, record {i}", record


def iter_input(path: Path, root: Path | None, counter: SkipCounter, stats: dict) -> Iterator[tuple[str, RegionRecord]]:
    """(source, record) pairs of one INPUT (module docstring)."""
    if path.is_dir() and (path / INDEX_NAME).is_file():
        yield from _iter_shards(path, counter)
    elif path.is_dir():
        for file in sorted(path.rglob("*.json")):
            record = _guarded(counter, read_region_json, file)
            if record is not None:
                yield str(file), record
    elif not path.exists():
        raise FormatError(str(path), message="no such file or directory")
    elif path.suffix == ".tsv":
        for record in iter_bua_tsv(path, counter):
            yield str(path), record
    elif path.suffix == ".zip":
        for member in list_members(path, ".json"):
            spec = f"{path.name}@/{member}"
            record = _guarded(counter, _region_from_spec, spec, path.parent, spec)
            if record is not None:
                yield f"{path}@/{member}", record
    elif path.suffix == ".jsonl" or (path.suffix == ".json" and _is_caption_file(path)):
        yield from _iter_captions(path, root or path.parent, counter, stats)
    elif path.suffix == ".json":
        record = _guarded(counter, read_region_json, path)
        if record is not None:
            yield str(path), record
    else:
        raise FormatError(str(path), message="unknown input kind: expected .tsv, .jsonl, .json, .zip or a directory")


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
    if args.soft_labels_topk is not None and args.soft_labels_topk < 1:
        print("vlbert-fast convert-features: --soft-labels-topk must be >= 1", file=sys.stderr)
        return 2
    counter = SkipCounter("skip" if args.skip_bad else "raise")
    stats = {"captions_without_frcnn": 0}

    def records() -> Iterator[tuple[str, RegionRecord]]:
        for name in args.inputs:
            yield from iter_input(Path(name), args.root, counter, stats)

    try:
        result = convert_to_shards(
            records(),
            args.out,
            max_boxes=args.max_boxes,
            counter=counter,
            dtype=args.dtype,
            shard_size=args.shard_size,
            soft_labels_topk=args.soft_labels_topk,
            overwrite=args.overwrite,
            source=", ".join(args.inputs),
        )
    except (FormatError, FileExistsError, ValueError) as exc:  # ValueError: a setting the data cannot take
        print(f"vlbert-fast convert-features: error: {exc}", file=sys.stderr)
        print(f"vlbert-fast convert-features: no index written; {args.out} is not a usable conversion", file=sys.stderr)
        if counter.total:
            print(counter.report(), file=sys.stderr)
        return 2  # unusable data (commands/exit_codes.py)
    result.update(stats)
    result["skipped"] = counter.total  # every skip: the readers' and the writer's (all go to the counter)
    print(f"wrote {result['records']} records in {result['shards']} shards to {args.out} ({result['bytes']} bytes)")
    for key, value in result.items():
        print(f"  {key}: {value}")
    print(counter.report())
    return 0
