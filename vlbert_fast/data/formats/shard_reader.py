"""The read side of the feature shards (format: shard_layout.py): `FeatureShards`, memory-mapped per process.

Opening reads index.json (a few hundred bytes) and the cached result of the directory's checks (shard_checks.py);
the index arrays and shard files are mapped on first use in each process, never parsed: a reader holds O(1) memory
in the number of records, the same in every rank and DataLoader worker. Every record read is checked again (finite
values, boxes with area, a positive image size) and a bad one is a FormatError naming the file, the record and the
image id.
"""

from __future__ import annotations

import json
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import FormatError
from .npy_files import open_npy
from .regions import RegionRecord, validate
from .shard_checks import Findings, check_directory, located
from .shard_ids import FENCE_STRIDE, IdLookup
from .shard_layout import (
    DTYPES,
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_ARRAYS,
    INDEX_NAME,
    ShardLayout,
    check_box_areas,
    dense_soft_labels,
    index_file,
    shard_file,
)

MAX_OPEN_SHARDS = 64
"""Shards whose files one process keeps mapped (least recently used closed first): each mapping holds a file
descriptor, and 3.3 M images in shards of 4096 are 806 shards of 3-5 files, past a common limit of 1024."""


def _older_version_message(path: Path, version: object) -> str:
    directory = path.parent
    if version == 1:
        return (
            f"format version 1 (every record padded to max_boxes, ids in index.json), which this version no longer "
            f"reads; convert it once (float32 values are kept exactly): vlbert-fast convert-features {directory} "
            f"--out {directory}_v{FORMAT_VERSION}"
        )
    return f"format version {version!r}, not {FORMAT_VERSION}: written by another version of vlbert_fast"


@dataclass
class ShardIndexMeta:
    """index.json, parsed and checked for consistency (not the arrays: shard_checks.py)."""

    layout: ShardLayout
    num_records: int
    num_boxes: int
    id_bytes: int
    max_boxes: int
    shard_size: int
    num_shards: int
    stats: dict
    fence_stride: int = FENCE_STRIDE

    @classmethod
    def read(cls, path: Path) -> ShardIndexMeta:
        if not path.exists():
            raise FormatError(
                str(path), message="missing: not a feature-shard directory, or a conversion that did not finish"
            )
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(str(path), message=f"unreadable index: {exc}", reason="bad index") from None
        if not isinstance(index, dict) or index.get("format") != FORMAT_NAME:
            found = repr(index.get("format")) if isinstance(index, dict) else type(index).__name__
            raise FormatError(str(path), None, "format", repr(FORMAT_NAME), found, reason="bad index")
        if index.get("version") != FORMAT_VERSION:
            message = _older_version_message(path, index.get("version"))
            raise FormatError(str(path), message=message, reason="old shard format")
        try:
            topk = index["soft_labels_topk"]
            layout = ShardLayout(
                index["feature_dim"], index["num_classes"], index["dtype"], topk, index["with_image_box_feature"]
            )
            if layout.dtype not in DTYPES or index["soft_labels"] not in (None, "exact", "topk"):
                raise ValueError(f"dtype {layout.dtype!r}, soft_labels {index['soft_labels']!r}")
            meta = cls(
                layout,
                int(index["num_records"]),
                int(index["num_boxes"]),
                int(index["id_bytes"]),
                int(index["max_boxes"]),
                int(index["shard_size"]),
                int(index["num_shards"]),
                index.get("stats", {}),
            )
            fields = json.loads(json.dumps({name: spec[:2] for name, spec in layout.fields().items()}))
            if index["fields"] != fields:
                raise ValueError(f"fields {index['fields']} are not those of the layout, {fields}")
            if meta.shard_size < 1 or meta.num_shards != math.ceil(meta.num_records / meta.shard_size):
                raise ValueError(f"{meta.num_shards} shards of {meta.shard_size} for {meta.num_records} records")
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(str(path), message=f"inconsistent index: {exc!r}", reason="bad index") from None
        return meta

    @property
    def index_files(self) -> dict[str, str]:
        return {name: index_file(name) for name in INDEX_ARRAYS}

    @property
    def index_specs(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        n = self.num_records
        return {
            "box_offsets": ("int64", (n + 1,)),
            "image_wh": ("int32", (n, 2)),
            "ids": ("uint8", (self.id_bytes,)),
            "id_offsets": ("int64", (n + 1,)),
            "id_hash": ("uint64", (n,)),
            "id_order": ("int64", (n,)),
            "id_fence": ("uint64", (math.ceil(n / self.fence_stride),)),
        }

    def shard_files(self, k: int) -> dict[str, str]:
        return {name: shard_file(k, name) for name in self.layout.fields()}

    def shard_specs(self, k: int, box_offsets: np.ndarray) -> dict[str, tuple[str, str, tuple[int, ...]]]:
        """Field -> (file, dtype, shape) of shard k's files, as index.json and the box offsets imply."""
        first, end = self.shard_records(k)
        boxes = int(box_offsets[end] - box_offsets[first])
        return {
            name: (shard_file(k, name), dtype, (boxes if per_box else end - first, *row_shape))
            for name, (dtype, row_shape, per_box) in self.layout.fields().items()
        }

    def shard_records(self, k: int) -> tuple[int, int]:
        """(first record, one past the last) of shard k."""
        return k * self.shard_size, min((k + 1) * self.shard_size, self.num_records)

    def open_arrays(self, directory: Path) -> dict:
        """The index arrays of `directory`, memory-mapped and checked against index.json, with "lookup": their
        IdLookup. Nothing is read but the .npy headers."""
        arrays = {
            name: open_npy(directory / file, *self.index_specs[name], "as index.json implies")
            for name, file in self.index_files.items()
        }
        ids = [arrays[name] for name in ("ids", "id_offsets", "id_hash", "id_order", "id_fence")]
        arrays["lookup"] = IdLookup(*ids)
        return arrays


class ImageIds(Sequence):
    """The image ids in storage order, read from the index on demand (a list of 3.3 M ids would cost ~300 MB)."""

    def __init__(self, shards: FeatureShards):
        self._shards = shards

    def __len__(self) -> int:
        return len(self._shards)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"image id {i} out of range for {n} records")
        return self._shards._arrays()["lookup"].id_at(i % n)


class FeatureShards:
    """Read side of the shards: `shards[image_id] -> RegionRecord` (float32, dense soft labels).

    `on_bad_record`: "raise" refuses a directory with any finding of its checks (shard_checks.py) when opened;
    "skip" opens it, and each unusable record raises its FormatError when read, for the loader to skip and count.
    A record whose values are bad (NaN, a box without area, ...) raises when read in both modes.

    The files are memory-mapped lazily, per process: a pid check remaps them in a forked DataLoader worker, and
    pickling drops them (what travels is index.json's contents and the findings, a few KB whatever the size).
    """

    def __init__(self, directory: str | os.PathLike, on_bad_record: str = "raise"):
        if on_bad_record not in ("raise", "skip"):
            raise ValueError(f"FeatureShards: on_bad_record must be 'raise' or 'skip', got {on_bad_record!r}")
        self.directory = Path(directory)
        self.meta = ShardIndexMeta.read(self.directory / INDEX_NAME)
        self.findings: Findings = check_directory(self.directory, self.meta, on_bad_record)
        self._reset()

    # -- the directory's description --------------------------------------------------------------------------------
    @property
    def feature_dim(self) -> int:
        return self.meta.layout.feature_dim

    @property
    def num_classes(self) -> int | None:
        return self.meta.layout.num_classes

    @property
    def soft_labels_topk(self) -> int | None:
        """K of compact top-k soft labels; None: exact (all num_classes) or no soft labels."""
        return self.meta.layout.soft_labels_topk

    @property
    def dtype(self) -> str:
        return self.meta.layout.dtype

    @property
    def max_boxes(self) -> int:
        return self.meta.max_boxes

    @property
    def stats(self) -> dict:
        return self.meta.stats

    @property
    def unusable_records(self) -> int:
        """Records the checks found unusable (only a skip-mode reader opens a directory that has any)."""
        return self.findings.unusable_records(self.meta.num_records, self.meta.shard_size)

    def __len__(self) -> int:
        return self.meta.num_records

    @property
    def image_ids(self) -> ImageIds:
        """The image ids in storage order (a read-only sequence)."""
        return ImageIds(self)

    # -- per-process state -------------------------------------------------------------------------------------------
    def _reset(self) -> None:
        self._pid = os.getpid()
        self._index: dict | None = None
        self._open: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._last: tuple[str, int | None] | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for key in ("_pid", "_index", "_open", "_last"):
            del state[key]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    def _arrays(self) -> dict:
        if self._pid != os.getpid():
            self._reset()
        if self._index is None:
            self._index = self.meta.open_arrays(self.directory)
        return self._index

    def _shard(self, k: int) -> dict[str, np.ndarray]:
        maps = self._open.get(k)
        if maps is not None:
            self._open.move_to_end(k)
            return maps
        specs = self.meta.shard_specs(k, self._arrays()["box_offsets"])
        maps = {
            name: open_npy(self.directory / file, dtype, shape, "as index.json implies")
            for name, (file, dtype, shape) in specs.items()
        }
        self._open[k] = maps
        if len(self._open) > MAX_OPEN_SHARDS:
            self._open.popitem(last=False)  # its maps close when the arrays are collected (reads copy)
        return maps

    # -- lookups -----------------------------------------------------------------------------------------------------
    def index_of(self, image_id: object) -> int | None:
        """The record of `image_id` (the first one if several records claim it), or None."""
        if not isinstance(image_id, str):
            return None
        if self._pid != os.getpid():
            self._reset()
        if self._last is None or self._last[0] != image_id:  # `key in shards` then `shards[key]` searches once
            self._last = (image_id, self._arrays()["lookup"].find(image_id))
        return self._last[1]

    def __contains__(self, image_id: object) -> bool:
        return self.index_of(image_id) is not None

    def __getitem__(self, image_id: str) -> RegionRecord:
        i = self.index_of(image_id)
        if i is None:
            raise KeyError(
                f"image_id {image_id!r} is not in the feature shards at {self.directory} ({len(self)} images)"
            )
        return self.record_at(i, image_id)

    def record_at(self, i: int, image_id: str | None = None) -> RegionRecord:
        """The i-th record in storage order (`image_id`: its id, when the caller has just looked it up)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"FeatureShards: index {i} out of range for {n} records in {self.directory}")
        i %= n
        index = self._arrays()
        image_id = index["lookup"].id_at(i) if image_id is None else image_id
        known = self.findings.error_for(i, self.meta.shard_size)
        if known is not None and known.record is not None:
            raise known
        if known is not None:  # a finding about the record's shard: name the record too
            raise located(known, i, image_id)
        k = i // self.meta.shard_size
        try:
            maps = self._shard(k)
        except FormatError as err:  # a file changed since the directory was checked
            raise located(err, i, image_id) from None
        offsets = index["box_offsets"]
        base = int(offsets[self.meta.shard_records(k)[0]])
        lo, hi = int(offsets[i]) - base, int(offsets[i + 1]) - base
        image_w, image_h = (int(v) for v in index["image_wh"][i])
        layout = self.meta.layout
        classes = None
        if "classes" in maps:
            classes = np.array(maps["classes"][lo:hi], np.float32)
        elif "class_ids" in maps:
            classes = dense_soft_labels(maps["class_ids"][lo:hi], maps["class_probs"][lo:hi], layout.num_classes)
        whole = None
        if "image_box_feature" in maps:
            whole = np.array(maps["image_box_feature"][i - k * self.meta.shard_size], np.float32)
        record = RegionRecord(
            image_id,
            image_w,
            image_h,
            np.array(maps["boxes"][lo:hi], np.float32),
            np.array(maps["features"][lo:hi], np.float32),
            classes,
            whole,
        )
        self._check(record, i, k)
        return record

    def _check(self, record: RegionRecord, i: int, k: int) -> None:
        """Raises a FormatError naming the file of the bad field, the record and its image id. The arrays' types
        and shapes are the files' (checked when mapped); what can be wrong is a value: when none is, the record
        passes without the full validation, which runs to find and describe the problem otherwise."""
        boxes = record.boxes
        values = [a for a in (boxes, record.features, record.classes, record.image_box_feature) if a is not None]
        if (
            record.image_w > 0
            and record.image_h > 0
            and all(np.isfinite(a).all() for a in values)
            and bool(((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all())
        ):
            return
        try:
            validate(str(self.directory), record)
            check_box_areas(str(self.directory), record)
        except FormatError as err:
            if err.field in ("image_w", "image_h"):
                file = self.meta.index_files["image_wh"]
            elif err.field == "classes" and "class_probs" in self.meta.layout.fields():
                file = shard_file(k, "class_probs")
            elif err.field in self.meta.layout.fields():
                file = shard_file(k, err.field)
            else:
                file = self.meta.index_files["ids"]
            raise FormatError(
                str(self.directory / file),
                (i, record.image_id),
                err.field,
                err.expected,
                err.found,
                message=err.message,
                reason=err.reason,
            ) from None

    def __repr__(self) -> str:
        labels = f"top-{self.soft_labels_topk}" if self.soft_labels_topk else f"C={self.num_classes}"
        return (
            f"FeatureShards({str(self.directory)!r}, {len(self)} records, D={self.feature_dim}, {labels}, {self.dtype})"
        )
