"""Feature shards, format version 1: every record padded to max_boxes, the image ids listed in index.json.

Training no longer reads it (FeatureShards names the conversion); this module keeps its reader, for
`vlbert-fast convert-features OLD_DIR --out NEW_DIR`, and its writer, for `vlbert-fast bench data`, which measures
it beside version 2 in the same run. Legend: S records in a shard, M = max_boxes, D feature width, C classes.
Per shard k (`shard-0000k.<field>.npy`):
    boxes              float32 [S, M, 4]   rows past num_boxes are zero
    features           dtype   [S, M, D]
    classes            dtype   [S, M, C]   optional soft labels
    num_boxes          int32   [S]
    image_wh           int32   [S, 2]      (W, H)
    image_box_feature  dtype   [S, D]      optional
`index.json`: format name, version 1, dims, dtypes, and per shard its count, files and image ids (record r of
shard k has image id shards[k].image_ids[r]); every reader parses it and builds a dict of all ids.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .errors import FormatError
from .npy_files import NpyAppender, open_npy
from .regions import RegionRecord, validate
from .shard_layout import FORMAT_NAME, INDEX_NAME
from .shard_writer import directory_bytes

PADDED_VERSION = 1


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


def is_padded_directory(directory: str | os.PathLike) -> bool:
    """Whether `directory` holds version-1 (padded) shards."""
    try:
        index = json.loads((Path(directory) / INDEX_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(index, dict) and index.get("format") == FORMAT_NAME and index.get("version") == PADDED_VERSION


def write_padded_shards(
    records, out_dir: str | os.PathLike, feature_dim: int, num_classes: int | None, max_boxes: int = 100, *,
    shard_size: int = 4096, dtype: str = "float16", with_image_box_feature: bool = False,
) -> dict:  # fmt: skip
    """Writes valid RegionRecords in version 1 (the records are validated, not counted or skipped); returns stats."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs = _field_specs(feature_dim, num_classes, max_boxes, dtype, with_image_box_feature)
    shards: list[dict] = []
    appenders: dict[str, NpyAppender] | None = None

    def finish() -> None:
        for appender in appenders.values():
            appender.finish()

    for record in records:
        validate(str(out), record)
        if appenders is None or shards[-1]["count"] == shard_size:
            if appenders is not None:
                finish()
            name = f"shard-{len(shards):05d}"
            files = {field: f"{name}.{field}.npy" for field in specs}
            appenders = {field: NpyAppender(out / files[field], dt, shape) for field, (dt, shape) in specs.items()}
            shards.append({"name": name, "count": 0, "files": files, "image_ids": []})
        keep = min(record.num_boxes, max_boxes)
        for field, (dt, shape) in specs.items():
            if field in ("boxes", "features", "classes"):
                value = np.zeros(shape, dt)
                if keep:
                    value[:keep] = getattr(record, field)[:keep]
            elif field == "num_boxes":
                value = np.array(keep)
            elif field == "image_wh":
                value = np.array([record.image_w, record.image_h])
            else:
                value = record.image_box_feature
            appenders[field].append(value)
        shards[-1]["count"] += 1
        shards[-1]["image_ids"].append(record.image_id)
    if appenders is not None:
        finish()
    count = sum(s["count"] for s in shards)
    index = {
        "format": FORMAT_NAME,
        "version": PADDED_VERSION,
        "feature_dim": feature_dim,
        "num_classes": num_classes,
        "max_boxes": max_boxes,
        "dtypes": {field: dt for field, (dt, _) in specs.items()},
        "num_records": count,
        "shards": shards,
        "stats": {"records": count},
    }
    (out / INDEX_NAME).write_text(json.dumps(index), encoding="utf-8")
    return {"records": count, "shards": len(shards), "bytes": directory_bytes(out)}


class PaddedFeatureShards:
    """Read side of version 1, as it was: index.json parsed eagerly, a dict of all ids built on first lookup, the
    .npy files mapped lazily per process. `record_at(i)` and `shards[image_id]` give float32 RegionRecords."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        path = self.directory / INDEX_NAME
        if not is_padded_directory(self.directory):
            raise FormatError(str(path), message=f"not a feature-shard directory of format version {PADDED_VERSION}")
        index = json.loads(path.read_text(encoding="utf-8"))
        try:
            self.feature_dim, self.num_classes = index["feature_dim"], index["num_classes"]
            self.max_boxes, self.dtype = index["max_boxes"], index["dtypes"]["features"]
            self._specs = _field_specs(
                self.feature_dim, self.num_classes, self.max_boxes, self.dtype, "image_box_feature" in index["dtypes"]
            )
            self._shards = [{"count": s["count"], "files": s["files"]} for s in index["shards"]]
            self._ids: list[str] = [i for s in index["shards"] for i in s["image_ids"]]
        except (KeyError, TypeError) as exc:
            raise FormatError(str(path), message=f"inconsistent index: {exc!r}", reason="bad index") from None
        self._starts = np.cumsum([0] + [s["count"] for s in self._shards])
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._maps: list[dict | None] = [None] * len(self._shards)
        self._lookup: dict[str, int] | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for key in ("_pid", "_maps", "_lookup"):
            del state[key]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    def __len__(self) -> int:
        return len(self._ids)

    def _index_of(self) -> dict[str, int]:
        if self._lookup is None:
            self._lookup = {image_id: i for i, image_id in enumerate(self._ids)}
        return self._lookup

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._index_of()

    def record_at(self, i: int) -> RegionRecord:
        if self._pid != os.getpid():
            self._reset()
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        row = i - int(self._starts[k])
        if self._maps[k] is None:
            count = self._shards[k]["count"]
            self._maps[k] = {
                field: open_npy(self.directory / self._shards[k]["files"][field], dt, (count, *shape), "in version 1")
                for field, (dt, shape) in self._specs.items()
            }
        maps = self._maps[k]
        num = int(maps["num_boxes"][row])
        if not 0 <= num <= self.max_boxes:
            file = self.directory / self._shards[k]["files"]["num_boxes"]
            raise FormatError(str(file), (i, self._ids[i]), "num_boxes", f"0..{self.max_boxes}", num)

        def read(field: str) -> np.ndarray | None:
            if field not in maps:
                return None
            return np.array(maps[field][row] if field == "image_box_feature" else maps[field][row, :num], np.float32)

        w, h = (int(v) for v in maps["image_wh"][row])
        return RegionRecord(
            self._ids[i], w, h, read("boxes"), read("features"), read("classes"), read("image_box_feature")
        )

    def __getitem__(self, image_id: str) -> RegionRecord:
        i = self._index_of().get(image_id)
        if i is None:
            raise KeyError(f"image_id {image_id!r} is not in the feature shards at {self.directory}")
        return self.record_at(i)
