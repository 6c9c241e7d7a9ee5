"""What FeatureShards checks once when it opens a directory, with the result cached: everything about the files
that is not one record's values (those are checked record by record when read, shard_reader.py).

- the index arrays: present, of the dtype and shape index.json implies, not truncated; box and id offsets running
  from 0 to their totals without going back; the id lookup consistent with the ids (a permutation of the records,
  sorted hashes, each hash that of its id);
- every shard file: present, of the dtype and row width the layout implies, as many rows as the offsets say, not
  truncated (a bad file makes its whole shard unusable);
- every record: a positive image size, at most max_boxes boxes, an image id no other record has.

Problems of the index itself are fatal (no record can be found). The others are findings: in strict mode
(`on_bad_record="raise"`) the first one is raised when the directory is opened; in skip mode each unusable record
raises its FormatError when read, so the loader skips and counts it. Every error names the file, the record and the
image id.

The scan reads the index arrays once (about a second of CPU for 3.3 M records) and every shard file's header; its
result is saved as `index.checked.json` beside the shards, or under `$VLBERT_FAST_CACHE/shard_checks/` when the
directory is read-only, keyed by the size and modification time of index.json and of the index arrays and by the
names of the shard files: the other ranks, workers and runs open the directory with a fixed number of stats and
one listing, and a changed index or a shard file added or removed is checked again. A shard file changed in place
afterwards is caught when a process first maps it (shard_reader.py checks its header and size against the index
then), as an error about the record being read.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cache_dir import default_cache_dir
from .errors import FormatError
from .npy_files import check_npy, open_npy
from .shard_ids import hash_ids

CHECKS_VERSION = 1
CACHE_NAME = "index.checked.json"
_ERROR_FIELDS = ("file", "record", "field", "expected", "found", "message", "reason")


def _to_json(err: FormatError) -> dict:
    out = {name: getattr(err, name) for name in _ERROR_FIELDS}
    out["record"] = list(err.record) if isinstance(err.record, tuple) else err.record
    return {k: (v if v is None or isinstance(v, (int, list)) else str(v)) for k, v in out.items()}


def _from_json(obj: dict) -> FormatError:
    record = tuple(obj["record"]) if isinstance(obj["record"], list) else obj["record"]
    return FormatError(
        obj["file"],
        record,
        obj["field"],
        obj["expected"],
        obj["found"],
        message=obj["message"],
        reason=obj["reason"],
    )


def located(err: FormatError, i: int, image_id: str) -> FormatError:
    """`err`, about a record's shard file, as an error about record i (its file, the record, its image id)."""
    message = "; ".join(p for p in (err.message, "the record's shard is unusable") if p)
    return FormatError(err.file, (i, image_id), err.field, err.expected, err.found, message=message, reason=err.reason)


@dataclass
class Findings:
    """Unusable shards and records of a directory (module docstring)."""

    bad_shards: dict[int, FormatError] = field(default_factory=dict)
    bad_records: dict[int, FormatError] = field(default_factory=dict)

    def error_for(self, i: int, shard_size: int) -> FormatError | None:
        return self.bad_records.get(i) or self.bad_shards.get(i // shard_size)

    def first(self, shard_size: int) -> FormatError | None:
        """The finding of the lowest record (a shard's counts as its first record's)."""
        candidates = [(i, err) for i, err in self.bad_records.items()]
        candidates += [(k * shard_size, err) for k, err in self.bad_shards.items()]
        return min(candidates, key=lambda item: item[0])[1] if candidates else None

    def unusable_records(self, num_records: int, shard_size: int) -> int:
        in_shards = sum(min(shard_size, num_records - k * shard_size) for k in self.bad_shards)
        return in_shards + sum(1 for i in self.bad_records if i // shard_size not in self.bad_shards)

    def to_json(self) -> dict:
        return {
            "bad_shards": {str(k): _to_json(e) for k, e in self.bad_shards.items()},
            "bad_records": {str(i): _to_json(e) for i, e in self.bad_records.items()},
        }

    @classmethod
    def from_json(cls, obj: dict) -> Findings:
        return cls(
            {int(k): _from_json(e) for k, e in obj["bad_shards"].items()},
            {int(i): _from_json(e) for i, e in obj["bad_records"].items()},
        )


def _fingerprint(directory: Path, meta) -> str:
    """Size and modification time of index.json and the index arrays, and the names of the shard files (one
    directory listing): a fixed number of stats, whatever the number of shards."""
    digest = hashlib.sha256(f"checks {CHECKS_VERSION} {directory.resolve()}\n".encode())  # a copy is checked again
    for path in [directory / "index.json", *(directory / name for name in meta.index_files.values())]:
        try:
            st = path.stat()
            digest.update(f"{path.name} {st.st_size} {st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path.name} missing\n".encode())
    digest.update("\n".join(sorted(n for n in os.listdir(directory) if n.startswith("shard-"))).encode())
    return digest.hexdigest()


def _cache_paths(directory: Path) -> list[Path]:
    fallback = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:32]
    return [directory / CACHE_NAME, default_cache_dir() / "shard_checks" / f"{fallback}.json"]


def _load_cached(directory: Path, fingerprint: str) -> Findings | None:
    for path in _cache_paths(directory):
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            if cached.get("fingerprint") == fingerprint:
                return Findings.from_json(cached["findings"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def _save(directory: Path, fingerprint: str, findings: Findings) -> None:
    text = json.dumps({"fingerprint": fingerprint, "findings": findings.to_json()})
    for path in _cache_paths(directory):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
            return
        except OSError:
            tmp.unlink(missing_ok=True)
    # nowhere writable: the next open scans again, which costs time but changes nothing


def _fatal(path: Path, message: str) -> FormatError:
    return FormatError(
        str(path),
        message=f"{message}; the index does not describe the shards (convert the data again)",
        reason="bad shard index",
    )


def _check_offsets(path: Path, offsets: np.ndarray, total: int, what: str) -> None:
    if offsets[0] != 0 or offsets[-1] != total:
        raise _fatal(path, f"{what} run from {int(offsets[0])} to {int(offsets[-1])}, expected 0 to {total}")
    back = np.flatnonzero(np.diff(offsets) < 0)
    if back.size:
        raise _fatal(path, f"{what} go back at record {int(back[0])}")


def _covers_all(order: np.ndarray, n: int) -> bool:
    """Whether `order` (values in 0..n-1, n of them) hits every record: a permutation (O(n), no sort)."""
    seen = np.zeros(n, bool)
    seen[order] = True
    return bool(seen.all())


def _scan_index(directory: Path, meta, findings: Findings) -> None:
    arrays = meta.open_arrays(directory)
    n, lookup = meta.num_records, arrays["lookup"]
    offsets = arrays["box_offsets"]
    _check_offsets(directory / meta.index_files["box_offsets"], offsets, meta.num_boxes, "box offsets")
    id_offsets = arrays["id_offsets"]
    _check_offsets(directory / meta.index_files["id_offsets"], id_offsets, meta.id_bytes, "id offsets")
    order, hashes = arrays["id_order"], arrays["id_hash"]
    order_path = directory / meta.index_files["id_order"]
    if n and (int(order.min()) < 0 or int(order.max()) >= n or not _covers_all(order, n)):
        raise _fatal(order_path, "id_order is not a permutation of the records")
    if n and bool((hashes[1:] < hashes[:-1]).any()):
        raise _fatal(directory / meta.index_files["id_hash"], "id hashes are not sorted")
    if n and not np.array_equal(hash_ids(arrays["ids"], id_offsets)[order], hashes):
        raise _fatal(directory / meta.index_files["id_hash"], "the id hashes are not those of the stored ids")
    if meta.index_specs["id_fence"][1] and not np.array_equal(arrays["id_fence"], hashes[:: meta.fence_stride]):
        raise _fatal(directory / meta.index_files["id_fence"], "the id fence is not every 512th hash")

    def bad(i: int, file: str, field_name: str, expected: str, found: str, reason: str) -> None:
        findings.bad_records.setdefault(
            i, FormatError(str(directory / file), (i, lookup.id_at(i)), field_name, expected, found, reason=reason)
        )

    # At most 10000 findings of a kind are kept (the cache stays small); records beyond fail their own checks when
    # read (shard_reader.py validates every record's values and sizes again).
    wh = arrays["image_wh"]
    for i in np.flatnonzero((wh <= 0).any(axis=1))[:10_000].tolist():
        bad(i, meta.index_files["image_wh"], "image_wh", "a positive (W, H)", str(wh[i].tolist()), "image size")
    counts = np.diff(offsets)
    for i in np.flatnonzero(counts > meta.max_boxes)[:10_000].tolist():
        found = f"{int(counts[i])} boxes"
        bad(i, meta.index_files["box_offsets"], "num_boxes", f"at most {meta.max_boxes} (max_boxes)", found, "boxes")
    _find_duplicates(hashes, order, lookup, bad, meta.index_files["ids"])


def _find_duplicates(hashes, order, lookup, bad, ids_file: str) -> None:
    """Records sharing an image id: within each run of equal hashes (tiny: collisions of FNV-1a 64 are rare), the
    records grouped by their stored id."""
    equal = np.flatnonzero(hashes[1:] == hashes[:-1])
    runs: list[list[int]] = []
    for j in equal.tolist():
        if runs and runs[-1][-1] == j:
            runs[-1].append(j + 1)
        else:
            runs.append([j, j + 1])
    for run in runs:
        by_id: dict[str, list[int]] = {}
        for j in run:
            record = int(order[j])
            by_id.setdefault(lookup.id_at(record), []).append(record)
        for records in by_id.values():
            if len(records) > 1:
                records.sort()
                for i in records:
                    others = ", ".join(str(r) for r in records if r != i)
                    bad(i, ids_file, "image_id", "unique ids", f"the id of record {others} too", "duplicate image_id")


def _scan_shards(directory: Path, meta, findings: Findings) -> None:
    offsets = open_npy(
        directory / meta.index_files["box_offsets"], *meta.index_specs["box_offsets"], "as index.json implies"
    )
    for k in range(meta.num_shards):
        for file, dtype, shape in meta.shard_specs(k, offsets).values():
            try:
                check_npy(directory / file, dtype, shape, "as index.json implies")
            except FormatError as err:
                findings.bad_shards[k] = err
                break


def check_directory(directory: Path, meta, on_bad_record: str) -> Findings:
    """The findings of `directory` (module docstring), from the cache or a scan; raises the first in strict mode,
    and any fatal problem in both modes. `meta` is the reader's parsed index.json (shard_reader.ShardIndexMeta)."""
    fingerprint = _fingerprint(directory, meta)
    findings = _load_cached(directory, fingerprint)
    if findings is None:
        findings = Findings()
        _scan_index(directory, meta, findings)
        _scan_shards(directory, meta, findings)
        _save(directory, fingerprint, findings)
    if on_bad_record == "raise" and (first := findings.first(meta.shard_size)) is not None:
        if first.record is None:  # a shard's finding: name its first record
            k = next(k for k, err in findings.bad_shards.items() if err is first)
            first = located(
                first, k * meta.shard_size, meta.open_arrays(directory)["lookup"].id_at(k * meta.shard_size)
            )
        raise first
    return findings
