"""Writing feature shards (the format: shard_layout.py): `ShardWriter` appends records shard by shard and writes the
index last, atomically; `convert_to_shards` converts region JSONs, a bottom-up-attention TSV or other shards."""

from __future__ import annotations

import json
import os
from array import array
from pathlib import Path

import numpy as np

from .errors import FormatError, SkipCounter
from .npy_files import NpyAppender, write_npy
from .paths import write_atomic
from .regions import RegionRecord, validate
from .shard_ids import hash_ids, sorted_hash_index
from .shard_layout import (
    DTYPES,
    FLOAT16_MAX,
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_ARRAYS,
    INDEX_NAME,
    ShardLayout,
    check_box_areas,
    index_file,
    shard_file,
    top_k_soft_labels,
)


class ShardWriter:
    """Writes RegionRecords into ragged shards of `shard_size` records (module docstring); use as a context manager,
    or call close(). Leaving the `with` block through an exception writes no index: the output stays unfinished.

    `num_classes=None` stores no classes (a record's classes are then dropped); likewise `with_image_box_feature`.
    `soft_labels_topk=K` stores each box's K likeliest classes, renormalised, instead of all C.
    Malformed records raise FormatError, or are counted and skipped with a "skip" `counter`.
    The index is kept in memory until close() writes it (and the ids as a set, to refuse duplicates): about 150
    bytes per image, 0.5 GB for 3.3 M; the features go to disk as they come.
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
        soft_labels_topk: int | None = None,
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
        if soft_labels_topk is not None:
            if num_classes is None:
                raise ValueError("ShardWriter: soft_labels_topk needs soft labels (num_classes is None)")
            if not isinstance(soft_labels_topk, int) or not 1 <= soft_labels_topk < num_classes:
                raise ValueError(
                    f"ShardWriter: soft_labels_topk must be an integer in 1..{num_classes - 1} (num_classes - 1; "
                    f"exact labels keep all {num_classes}), got {soft_labels_topk!r}"
                )
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        index = self.out_dir / INDEX_NAME
        if index.exists():
            if not overwrite:
                raise FileExistsError(f"ShardWriter: {index} exists (a finished conversion); pass overwrite=True")
            index.unlink()  # first, so a crash below never leaves the old index vouching for new files
        for pattern in ("shard-*.npy", "index.*.npy", "index.checked.json"):
            for stale in self.out_dir.glob(pattern):
                stale.unlink()
        self.layout = ShardLayout(feature_dim, num_classes, dtype, soft_labels_topk, with_image_box_feature)
        self.fields = self.layout.fields()
        self.max_boxes, self.shard_size, self.counter = max_boxes, shard_size, counter
        self.num_shards = 0
        self._open: dict[str, NpyAppender] | None = None
        self._box_offsets, self._image_wh = array("q", [0]), array("i")
        self._id_offsets, self._ids = array("q", [0]), bytearray()
        self._seen: set[str] = set()
        self.stats = {"records": 0, "skipped": 0, "truncated_records": 0, "dropped_boxes": 0}
        self.closed = False

    def _start_shard(self) -> None:
        self._open = {
            field: NpyAppender(self.out_dir / shard_file(self.num_shards, field), dtype, shape)
            for field, (dtype, shape, _) in self.fields.items()
        }
        self.num_shards += 1

    def _finish_shard(self) -> None:
        for appender in self._open.values():
            appender.finish()
        self._open = None

    def _check(self, record: RegionRecord, source: str) -> None:
        validate(source, record)
        check_box_areas(source, record)
        rid, num = record.image_id, record.num_boxes
        if num and record.feature_dim != self.layout.feature_dim:
            raise FormatError(source, rid, "features", f"{self.layout.feature_dim} columns", f"{record.feature_dim}")
        num_classes = self.layout.num_classes
        if num_classes is not None:
            if record.classes is None:
                raise FormatError(source, rid, "classes", f"[{num}, {num_classes}] soft labels", "none")
            if record.classes.shape[1] != num_classes:
                raise FormatError(source, rid, "classes", f"{num_classes} columns", f"{record.classes.shape[1]}")
        if self.layout.with_image_box_feature and record.image_box_feature is None:
            raise FormatError(source, rid, "image_box_feature", f"{self.layout.feature_dim} values", "none")
        if rid in self._seen:
            raise FormatError(source, rid, "image_id", "unique ids", "a second record", reason="duplicate image_id")
        if self.layout.dtype == "float16":
            for field in ("features", "classes", "image_box_feature"):
                value = getattr(record, field)
                if value is not None and value.size and np.abs(value).max() > FLOAT16_MAX:
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
        if keep:  # a record without boxes may carry a (0, 0) array: text formats cannot state the width
            self._open["boxes"].append(record.boxes[:keep])
            self._open["features"].append(record.features[:keep])
            if "classes" in self.fields:
                self._open["classes"].append(record.classes[:keep])
            elif "class_ids" in self.fields:
                ids, probs = top_k_soft_labels(record.classes[:keep], self.layout.soft_labels_topk)
                self._open["class_ids"].append(ids)
                self._open["class_probs"].append(probs)
        if "image_box_feature" in self.fields:
            self._open["image_box_feature"].append(record.image_box_feature)
        self._box_offsets.append(self._box_offsets[-1] + keep)
        self._image_wh.extend((int(record.image_w), int(record.image_h)))
        self._ids += record.image_id.encode("utf-8")
        self._id_offsets.append(len(self._ids))
        self._seen.add(record.image_id)
        self.stats["records"] += 1
        if self.stats["records"] % self.shard_size == 0:
            self._finish_shard()
        return True

    def _write_index(self) -> None:
        n = self.stats["records"]
        ids = np.frombuffer(bytes(self._ids), np.uint8)
        id_offsets = np.frombuffer(self._id_offsets, np.int64)
        id_hash, id_order, id_fence = sorted_hash_index(hash_ids(ids, id_offsets))
        arrays = {
            "box_offsets": np.frombuffer(self._box_offsets, np.int64),
            "image_wh": np.frombuffer(self._image_wh, np.int32).reshape(n, 2),
            "ids": ids,
            "id_offsets": id_offsets,
            "id_hash": id_hash,
            "id_order": id_order,
            "id_fence": id_fence,
        }
        for name in INDEX_ARRAYS:
            write_npy(self.out_dir / index_file(name), arrays[name])

    def close(self) -> dict:
        """Finishes the last shard, writes the index arrays, then index.json (atomically, last); returns the stats."""
        if self.closed:
            return self.stats
        if self._open is not None:
            self._finish_shard()
        self._write_index()
        layout = self.layout
        index = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "feature_dim": layout.feature_dim,
            "num_classes": layout.num_classes,
            "soft_labels": None if layout.num_classes is None else ("topk" if layout.soft_labels_topk else "exact"),
            "soft_labels_topk": layout.soft_labels_topk,
            "max_boxes": self.max_boxes,
            "dtype": layout.dtype,
            "with_image_box_feature": layout.with_image_box_feature,
            "fields": {field: list(spec[:2]) for field, spec in self.fields.items()},
            "num_records": self.stats["records"],
            "num_boxes": int(self._box_offsets[-1]),
            "id_bytes": len(self._ids),
            "shard_size": self.shard_size,
            "num_shards": self.num_shards,
            "stats": self.stats,
        }
        write_atomic(self.out_dir / INDEX_NAME, json.dumps(index))
        self.closed = True
        self.stats.update(
            shards=self.num_shards,
            boxes=int(self._box_offsets[-1]),
            feature_dim=layout.feature_dim,
            num_classes=layout.num_classes,
            soft_labels_topk=layout.soft_labels_topk,
            max_boxes=self.max_boxes,
            dtype=layout.dtype,
            bytes=directory_bytes(self.out_dir),
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


def directory_bytes(directory: Path) -> int:
    """Bytes of a shard directory's files (shards, index arrays, index.json): what a reader's storage holds."""
    names = ("shard-*.npy", "index.*.npy", INDEX_NAME)
    return sum(p.stat().st_size for pattern in names for p in Path(directory).glob(pattern))


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
    soft_labels_topk: int | None = None,
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
                    soft_labels_topk=soft_labels_topk,
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
