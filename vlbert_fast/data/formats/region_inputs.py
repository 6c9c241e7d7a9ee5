"""Region features in the forms others ship them, read as (source, RegionRecord) pairs: what `convert-features`
turns into our shards. By the form of each input:
- a directory with index.json: feature shards, of this format version (to convert again, e.g. into top-k soft
  labels or float16) or of version 1 (padded; key: the same image ids);
- `*.tsv`: a bottom-up-attention TSV (key: the image_id column);
- a directory: every `*.json` under it is one region JSON (key: its image_id field);
- `*.zip`: every `*.json` member is one region JSON (key: its image_id field);
- `*.jsonl`, or a `*.json` whose first line is a caption object: a Conceptual Captions file; the region JSON each
  `frcnn` spec points to is read once (key: the frcnn spec itself, `CaptionRecord.feature_key`, since that is what a
  dataset reading the captions has in hand). Specs are relative to `root`, by default the file's folder.
- any other `*.json`: one region JSON.
Malformed records go to the SkipCounter (raised, or skipped and counted).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from .bua_tsv import iter_bua_tsv
from .cc_jsonl import iter_cc_jsonl
from .errors import FormatError, SkipCounter
from .paths import list_members, read_bytes
from .region_json import read_region_json
from .regions import RegionRecord
from .shard_layout import INDEX_NAME
from .shard_reader import FeatureShards
from .shard_writer import convert_to_shards
from .shards_padded import PaddedFeatureShards, is_padded_directory


def _guarded(counter: SkipCounter, read, *args, **kwargs) -> RegionRecord | None:
    """read(*args, **kwargs), or None when it raised FormatError and the counter skips it."""
    try:
        return read(*args, **kwargs)
    except FormatError as err:
        counter.handle(err)
        return None


def _region_from_spec(spec: str, root: Path, source: str) -> RegionRecord:
    return read_region_json(read_bytes(spec, root), source=source)


def is_caption_file(path: Path) -> bool:
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


def iter_region_input(
    path: Path, root: Path | None, counter: SkipCounter, stats: dict
) -> Iterator[tuple[str, RegionRecord]]:
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
    elif path.suffix == ".jsonl" or (path.suffix == ".json" and is_caption_file(path)):
        yield from _iter_captions(path, root or path.parent, counter, stats)
    elif path.suffix == ".json":
        record = _guarded(counter, read_region_json, path)
        if record is not None:
            yield str(path), record
    else:
        raise FormatError(str(path), message="unknown input kind: expected .tsv, .jsonl, .json, .zip or a directory")


def convert_region_inputs(
    inputs: Sequence[str | Path], out: str | Path, root: Path | None, counter: SkipCounter, **options
) -> dict:
    """Converts every input (module docstring) into shards in `out` (`convert_to_shards`'s options: max_boxes,
    dtype, shard_size, soft_labels_topk, overwrite); returns its result with the inputs' own counts and every skip."""
    stats = {"captions_without_frcnn": 0}

    def records() -> Iterator[tuple[str, RegionRecord]]:
        for name in inputs:
            yield from iter_region_input(Path(name), root, counter, stats)

    result = convert_to_shards(records(), out, counter=counter, source=", ".join(map(str, inputs)), **options)
    result.update(stats)
    result["skipped"] = counter.total  # every skip: the readers' and the writer's (all go to the counter)
    return result
