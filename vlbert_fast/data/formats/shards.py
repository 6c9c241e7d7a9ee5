"""Our fast region-feature format: fixed-shape shards of .npy files plus `index.json`, read through memory maps.

Legend: S records in a shard, M = max_boxes, D feature width, C classes. Per shard k (`shard-0000k.<field>.npy`):
    boxes              float32 [S, M, 4]   x1, y1, x2, y2 in image pixels (float32: at 1000 px float16 steps 0.5 px)
    features           dtype   [S, M, D]   rows past num_boxes are zero
    classes            dtype   [S, M, C]   optional soft labels
    num_boxes          int32   [S]
    image_wh           int32   [S, 2]      (W, H)
    image_box_feature  dtype   [S, D]      optional
`dtype` is float16 (default, half the bytes) or float32. float16 rounds to nearest even: relative error at most
2^-11 (about 4.9e-4) for magnitudes in [6.1e-5, 65504], absolute error at most 2^-25 below that; a value beyond
65504 would become inf, so a record holding one is rejected (convert it with dtype float32). Readers get float32.

`index.json` (format name, version, dims, dtypes, per-shard counts, files and image ids; record r of shard k has
image id shards[k].image_ids[r]) is written last, through a temporary file and an atomic rename: a directory
without it is an unfinished conversion and FeatureShards refuses it.

Records with more than M boxes keep their first M: detectors emit boxes sorted by confidence (bottom-up-attention
keeps the top boxes after NMS in score order), so the least confident are dropped; the writer counts them.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from .errors import FormatError, SkipCounter
from .regions import RegionRecord, validate

INDEX_NAME = "index.json"
FORMAT_NAME = "vlbert_fast.feature_shards"
FORMAT_VERSION = 1
DTYPES = ("float16", "float32")
FLOAT16_MAX = 65504.0
_HEADER_BYTES = 128  # fixed .npy header length, so the leading dimension can be patched in place at the end


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """A version 1.0 .npy header padded to a fixed length (the format allows any space padding)."""
    text = repr({"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape})
    total = _HEADER_BYTES
    while 10 + len(text) + 1 > total:
        total += 64
    body = (text + " " * (total - 10 - len(text) - 1) + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body


class _NpyAppender:
    """Appends rows to a .npy file opened for `capacity` rows; `finish(count)` patches the header to `count`."""

    def __init__(self, path: Path, dtype: str, row_shape: tuple[int, ...], capacity: int):
        self.path, self.dtype, self.row_shape, self.capacity = path, np.dtype(dtype), row_shape, capacity
        self.file = open(path, "wb")
        self.file.write(_npy_header(self.dtype, (capacity, *row_shape)))

    def append(self, row: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(row, dtype=self.dtype).tobytes())

    def finish(self, count: int) -> None:
        if count != self.capacity:
            self.file.seek(0)
            self.file.write(_npy_header(self.dtype, (count, *self.row_shape)))
            self.file.truncate(_HEADER_BYTES + count * self.dtype.itemsize * int(np.prod(self.row_shape)))
        self.file.flush()
        os.fsync(self.file.fileno())  # the data reaches the disk before the index that vouches for it
        self.file.close()

    def abort(self) -> None:
        self.file.close()


def _field_specs(feature_dim, num_classes, max_boxes, dtype, with_image_box_feature) -> dict[str, tuple]:
    """Field -> (dtype, row shape) of the shard files."""
    specs = {
        "boxes": ("float32", (max_boxes, 4)),
        "features": (dtype, (max_boxes, feature_dim)),
        "num_boxes": ("int32", ()),
        "image_wh": ("int32", (2,)),
    }
    if num_classes is not None:
        specs["classes"] = (dtype, (max_boxes, num_classes))
    if with_image_box_feature:
        specs["image_box_feature"] = (dtype, (feature_dim,))
    return specs


class ShardWriter:
    """Writes RegionRecords into shards of `shard_size` (module docstring); use as a context manager, or call
    close(). Leaving the `with` block through an exception writes no index: the output stays unfinished.

    `num_classes=None` stores no classes (a record's classes are then dropped); likewise `with_image_box_feature`.
    Malformed records raise FormatError, or are counted and skipped with a "skip" `counter`.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        feature_dim: int,
        num_classes: int | None,
        max_boxes: int,
        shard_size: int = 4096,
        *,
        dtype: str = "float16",
        with_image_box_feature: bool = False,
        counter: SkipCounter | None = None,
        overwrite: bool = False,
    ):
        if dtype not in DTYPES:
            raise ValueError(f"ShardWriter: dtype must be one of {DTYPES}, got {dtype!r}")
        for name, value, low in (
            ("feature_dim", feature_dim, 1),
            ("max_boxes", max_boxes, 1),
            ("shard_size", shard_size, 1),
        ):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"ShardWriter: {name} must be an integer >= {low}, got {value!r}")
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"ShardWriter: num_classes must be None or an integer >= 1, got {num_classes!r}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        index = self.out_dir / INDEX_NAME
        if index.exists():
            if not overwrite:
                raise FileExistsError(f"ShardWriter: {index} exists (a finished conversion); pass overwrite=True")
            index.unlink()  # first, so a crash below never leaves the old index vouching for new files
        for stale in self.out_dir.glob("shard-*.npy"):
            stale.unlink()
        self.feature_dim, self.num_classes, self.max_boxes = feature_dim, num_classes, max_boxes
        self.shard_size, self.dtype, self.counter = shard_size, dtype, counter
        self.specs = _field_specs(feature_dim, num_classes, max_boxes, dtype, with_image_box_feature)
        self.shards: list[dict] = []
        self._open: dict[str, _NpyAppender] | None = None
        self._seen: set[str] = set()
        self.stats = {"records": 0, "skipped": 0, "truncated_records": 0, "dropped_boxes": 0}
        self.closed = False

    def _start_shard(self) -> None:
        name = f"shard-{len(self.shards):05d}"
        files = {field: f"{name}.{field}.npy" for field in self.specs}
        self._open = {
            field: _NpyAppender(self.out_dir / files[field], dtype, shape, self.shard_size)
            for field, (dtype, shape) in self.specs.items()
        }
        self.shards.append({"name": name, "count": 0, "files": files, "image_ids": []})

    def _finish_shard(self) -> None:
        count = self.shards[-1]["count"]
        for appender in self._open.values():
            appender.finish(count)
        self._open = None

    def _check(self, record: RegionRecord, source: str) -> None:
        validate(source, record)
        rid, num = record.image_id, record.num_boxes
        if num and record.feature_dim != self.feature_dim:
            raise FormatError(source, rid, "features", f"{self.feature_dim} columns", f"{record.feature_dim}")
        if self.num_classes is not None:
            if record.classes is None:
                raise FormatError(source, rid, "classes", f"[{num}, {self.num_classes}] soft labels", "none")
            if record.classes.shape[1] != self.num_classes:
                found = record.classes.shape[1]
                raise FormatError(source, rid, "classes", f"{self.num_classes} columns", f"{found}")
        if "image_box_feature" in self.specs and record.image_box_feature is None:
            raise FormatError(source, rid, "image_box_feature", f"{self.feature_dim} values", "none")
        if rid in self._seen:
            raise FormatError(source, rid, "image_id", "unique ids", "a second record", reason="duplicate image_id")
        if self.dtype == "float16":
            for field in ("features", "classes", "image_box_feature"):
                value = getattr(record, field)
                if field in self.specs and value is not None and value.size and np.abs(value).max() > FLOAT16_MAX:
                    found = f"{float(np.abs(value).max()):g}"
                    raise FormatError(
                        source, rid, field, f"|values| <= {FLOAT16_MAX:g} for float16 (use dtype float32)", found
                    )

    def add(self, record: RegionRecord, source: str = "<ShardWriter input>") -> bool:
        """Writes one record; returns False when it was malformed and skipped (counted by the counter)."""
        if self.closed:
            raise RuntimeError(f"ShardWriter: {self.out_dir} is already closed")
        try:
            self._check(record, source)
        except FormatError as err:
            if self.counter is None:
                raise
            self.counter.handle(err)
            self.stats["skipped"] += 1
            return False
        if self._open is None:
            self._start_shard()
        num, keep = record.num_boxes, min(record.num_boxes, self.max_boxes)
        if num > keep:
            self.stats["truncated_records"] += 1
            self.stats["dropped_boxes"] += num - keep
        rows = {
            "boxes": record.boxes[:keep],
            "features": record.features[:keep],
            "classes": None if record.classes is None else record.classes[:keep],
        }
        for field, (dtype, shape) in self.specs.items():
            if field in rows:
                padded = np.zeros(shape, dtype=dtype)
                if keep:  # a record without boxes may carry a (0, 0) array: text formats cannot state the width
                    padded[:keep] = rows[field]
                self._open[field].append(padded)
        self._open["num_boxes"].append(np.array(keep))
        self._open["image_wh"].append(np.array([record.image_w, record.image_h]))
        if "image_box_feature" in self.specs:
            self._open["image_box_feature"].append(record.image_box_feature)
        shard = self.shards[-1]
        shard["count"] += 1
        shard["image_ids"].append(record.image_id)
        self._seen.add(record.image_id)
        self.stats["records"] += 1
        if shard["count"] == self.shard_size:
            self._finish_shard()
        return True

    def close(self) -> dict:
        """Finishes the last shard and writes index.json (atomically, last); returns the stats."""
        if self.closed:
            return self.stats
        if self._open is not None:
            self._finish_shard()
        dtypes = {field: dtype for field, (dtype, _) in self.specs.items()}
        index = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "feature_dim": self.feature_dim,
            "num_classes": self.num_classes,
            "max_boxes": self.max_boxes,
            "dtypes": dtypes,
            "num_records": self.stats["records"],
            "shards": self.shards,
            "stats": self.stats,
        }
        tmp = self.out_dir / (INDEX_NAME + ".tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump(index, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.out_dir / INDEX_NAME)
        self.closed = True
        self.stats.update(
            shards=len(self.shards),
            feature_dim=self.feature_dim,
            num_classes=self.num_classes,
            max_boxes=self.max_boxes,
            dtype=self.dtype,
            bytes=sum(p.stat().st_size for p in self.out_dir.glob("shard-*.npy")),
        )
        return self.stats

    def abort(self) -> None:
        """Closes the files without writing the index: the directory stays an unfinished conversion."""
        if self._open is not None:
            for appender in self._open.values():
                appender.abort()
            self._open = None
        self.closed = True

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def convert_to_shards(
    records,
    out_dir: str | os.PathLike,
    *,
    feature_dim: int | None = None,
    num_classes: int | None = None,
    max_boxes: int = 100,
    counter: SkipCounter | None = None,
    dtype: str = "float16",
    shard_size: int = 4096,
    with_image_box_feature: bool | None = None,
    overwrite: bool = False,
    source: str = "<records>",
) -> dict:
    """Writes RegionRecords (or (source, RegionRecord) pairs, so that errors name each record's file) as shards;
    returns the writer's stats. Dimensions left None are taken from the first
    record that validates (num_classes: its classes' width, or no classes when it has none); every later record
    must agree. Malformed records raise FormatError, or are counted and skipped with a "skip" counter."""
    writer = None
    try:
        for item in records:
            record_source, record = item if isinstance(item, tuple) else (source, item)
            if writer is None:
                try:
                    validate(record_source, record)
                except FormatError as err:
                    if counter is None:
                        raise
                    counter.handle(err)
                    continue
                writer = ShardWriter(
                    out_dir,
                    feature_dim if feature_dim is not None else record.feature_dim,
                    num_classes if num_classes is not None or record.classes is None else record.classes.shape[1],
                    max_boxes,
                    shard_size,
                    dtype=dtype,
                    with_image_box_feature=(
                        record.image_box_feature is not None
                        if with_image_box_feature is None
                        else with_image_box_feature
                    ),
                    counter=counter,
                    overwrite=overwrite,
                )
            writer.add(record, record_source)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is None:
        raise FormatError(source, message="no valid records to convert", reason="no records")
    return writer.close()


# The read side lives in its own module (file size); it is part of this format's API, so it is importable from here.
from .shard_reader import FeatureShards  # noqa: E402

__all__ = ["DTYPES", "FORMAT_NAME", "FORMAT_VERSION", "INDEX_NAME", "FeatureShards", "ShardWriter", "convert_to_shards"]
