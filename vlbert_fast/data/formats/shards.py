"""Our region-feature format, version 2: ragged shards of .npy files and a binary index, read through memory maps
(the reader: shard_reader.py; its checks: shard_checks.py).

Every record's boxes are stored back to back and never padded: an image with 10 boxes costs 10 rows, one with 100
costs 100. Legend: N records, B_k boxes and S_k records in shard k, D feature width, C classes, K of top-k labels.

Shard k holds records k * shard_size ... (k + 1) * shard_size - 1 in storage order (`shard-0000k.<field>.npy`):
    boxes              float32 [B_k, 4]  x1, y1, x2, y2 in image pixels (float32: at 1000 px float16 steps 0.5 px)
    features           dtype   [B_k, D]
    classes            dtype   [B_k, C]  soft labels, exact: all C classes                         } optional,
    class_ids          int16   [B_k, K]  soft labels, top-k: the K most likely classes, likeliest   } exact or
    class_probs        dtype   [B_k, K]  first, with their probabilities renormalised to sum 1      } top-k
    image_box_feature  dtype   [S_k, D]  optional
The index, for all records at once (memory-mapped by every reader, never parsed into Python objects):
    index.box_offsets.npy  int64 [N + 1]  record i owns boxes box_offsets[i] ... box_offsets[i + 1] - 1, counted over
                                          all shards (its rows in shard k start at box_offsets[i] minus the shard's
                                          first, box_offsets[k * shard_size])
    index.image_wh.npy     int32 [N, 2]   (W, H) of each image
    index.ids.npy, index.id_offsets.npy, index.id_hash.npy, index.id_order.npy, index.id_fence.npy: the image ids
                                          and their sorted-hash lookup (shard_ids.py)
    index.json             format name, version, dims, dtypes, soft-label mode, counts, shard_size, conversion stats
`dtype` is float16 (default, half the bytes) or float32. float16 rounds to nearest even: relative error at most
2^-11 (about 4.9e-4) for magnitudes in [6.1e-5, 65504], absolute error at most 2^-25 below that; a value beyond
65504 would become inf, so a record holding one is rejected (convert it with dtype float32). Readers get float32.

index.json is written last, through a temporary file and an atomic rename, once every other file is fsynced: a
directory without it is an unfinished conversion and FeatureShards refuses it.

Records with more than max_boxes boxes keep their first max_boxes: detectors emit boxes sorted by confidence
(bottom-up-attention keeps the top boxes after NMS in score order), so the least confident are dropped; the writer
counts them. A record must hold finite values, boxes with x2 > x1 and y2 > y1 (a box without area locates
nothing), a positive image size and a unique image id; the writer rejects (or, with a skip counter, skips and
counts) any other, and the reader checks every record it reads again.

Compact soft labels (`soft_labels_topk=K`, a deliberate difference from the original, which keeps all C): the
masked-RoI target of a box becomes its K likeliest classes renormalised. With C = 1601 and K = 10 that is 40 bytes
per box instead of 3202 in float16. The loader orders detections by their top class probability, which top-k
renormalisation can reorder between boxes whose remaining mass differs. Exact labels stay the default.

Version 1 (every record padded to max_boxes, the ids listed in index.json; shards_padded.py) is not read for
training: FeatureShards names the command that converts it (`vlbert-fast convert-features OLD --out NEW`).
"""

from __future__ import annotations

import json
import os
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import FormatError, SkipCounter
from .npy_files import NpyAppender, write_npy
from .regions import RegionRecord, validate
from .shard_ids import hash_ids, sorted_hash_index

INDEX_NAME = "index.json"
FORMAT_NAME = "vlbert_fast.feature_shards"
FORMAT_VERSION = 2
DTYPES = ("float16", "float32")
FLOAT16_MAX = 65504.0
INDEX_ARRAYS = ("box_offsets", "image_wh", "ids", "id_offsets", "id_hash", "id_order", "id_fence")


def shard_file(k: int, field: str) -> str:
    return f"shard-{k:05d}.{field}.npy"


def index_file(name: str) -> str:
    return f"index.{name}.npy"


@dataclass(frozen=True)
class ShardLayout:
    """What one directory's shards hold; index.json records it."""

    feature_dim: int
    num_classes: int | None
    dtype: str = "float16"
    soft_labels_topk: int | None = None
    with_image_box_feature: bool = False

    def fields(self) -> dict[str, tuple[str, tuple[int, ...], bool]]:
        """Shard field -> (dtype, row shape, True: one row per box / False: one row per record)."""
        fields = {"boxes": ("float32", (4,), True), "features": (self.dtype, (self.feature_dim,), True)}
        if self.num_classes is not None and self.soft_labels_topk is None:
            fields["classes"] = (self.dtype, (self.num_classes,), True)
        elif self.num_classes is not None:
            id_dtype = "int16" if self.num_classes <= np.iinfo(np.int16).max else "int32"
            fields["class_ids"] = (id_dtype, (self.soft_labels_topk,), True)
            fields["class_probs"] = (self.dtype, (self.soft_labels_topk,), True)
        if self.with_image_box_feature:
            fields["image_box_feature"] = (self.dtype, (self.feature_dim,), False)
        return fields


def top_k_soft_labels(classes_NC: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """([N, k] class ids, [N, k] float32 probabilities): each row's k likeliest classes (ties: the lower class id
    first), likeliest first, renormalised to sum 1 (a row of zeros stays zeros)."""
    ids = np.argsort(-classes_NC, axis=1, kind="stable")[:, :k]
    probs = np.take_along_axis(classes_NC, ids, axis=1).astype(np.float32)
    total = probs.sum(axis=1, keepdims=True)
    return ids, np.divide(probs, total, out=np.zeros_like(probs), where=total > 0)


def dense_soft_labels(ids_NK: np.ndarray, probs_NK: np.ndarray, num_classes: int) -> np.ndarray:
    """[N, C] float32 soft labels from top-k ones (zero outside the k classes)."""
    dense = np.zeros((ids_NK.shape[0], num_classes), np.float32)
    np.put_along_axis(dense, ids_NK.astype(np.int64), probs_NK.astype(np.float32), axis=1)
    return dense


def check_box_areas(source: str, record: RegionRecord) -> None:
    """FormatError when a box has no area (x2 == x1 or y2 == y1); `validate` has already rejected reversed ones."""
    boxes = record.boxes
    flat_B = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if flat_B.any():
        flat = np.flatnonzero(flat_B)
        i = int(flat[0])
        found = f"box {i} = {boxes[i].tolist()} ({flat.size} such)"
        raise FormatError(source, record.image_id, "boxes", "x2 > x1 and y2 > y1 (a box with area)", found)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        tmp = self.out_dir / (INDEX_NAME + ".tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump(index, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.out_dir / INDEX_NAME)
        _fsync_directory(self.out_dir)
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


# The read side lives in its own module (file size); it is part of this format's API, so it is importable from here.
from .shard_reader import FeatureShards  # noqa: E402

__all__ = [
    "DTYPES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "INDEX_NAME",
    "FeatureShards",
    "ShardLayout",
    "ShardWriter",
    "convert_to_shards",
    "dense_soft_labels",
    "top_k_soft_labels",
]
