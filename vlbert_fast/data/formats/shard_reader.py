"""The read side of the feature shards (format: shards.py): `FeatureShards`, memory-mapped per process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .errors import FormatError
from .regions import RegionRecord
from .shards import FORMAT_NAME, FORMAT_VERSION, INDEX_NAME, _field_specs


def _load_index(path: Path) -> dict:
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
        raise FormatError(str(path), None, "version", FORMAT_VERSION, repr(index.get("version")), reason="bad index")
    try:
        specs = _field_specs(
            index["feature_dim"],
            index["num_classes"],
            index["max_boxes"],
            index["dtypes"]["features"],
            "image_box_feature" in index["dtypes"],
        )
        for shard in index["shards"]:
            if set(shard["files"]) != set(specs) or len(shard["image_ids"]) != shard["count"]:
                raise ValueError(f"shard {shard['name']} lists other files or another number of image ids")
        if sum(s["count"] for s in index["shards"]) != index["num_records"]:
            raise ValueError("the shard counts do not add up to num_records")
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(str(path), message=f"inconsistent index: {exc!r}", reason="bad index") from None
    index["specs"] = specs
    return index


class FeatureShards:
    """Read side of the shards: `shards[image_id] -> RegionRecord` (float32, the first num_boxes rows).

    The index is read here, eagerly; the .npy files are memory-mapped lazily, per process: a pid check reopens
    them in a forked DataLoader worker, and pickling drops them, so the object can be sent to workers.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self._index_path = self.directory / INDEX_NAME
        index = _load_index(self._index_path)
        self.feature_dim: int = index["feature_dim"]
        self.num_classes: int | None = index["num_classes"]
        self.max_boxes: int = index["max_boxes"]
        self.dtype: str = index["dtypes"]["features"]
        self.stats: dict = index.get("stats", {})
        self._specs: dict[str, tuple] = index["specs"]
        self._shards: list[dict] = [{"count": s["count"], "files": s["files"]} for s in index["shards"]]
        self._ids: list[str] = [i for s in index["shards"] for i in s["image_ids"]]
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

    @property
    def image_ids(self) -> list[str]:
        """The image ids in storage order (do not modify)."""
        return self._ids

    def _index_of(self) -> dict[str, int]:
        if self._lookup is None:
            self._lookup = {image_id: i for i, image_id in enumerate(self._ids)}
        return self._lookup

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._index_of()

    def _open_shard(self, k: int) -> dict:
        maps = {}
        count = self._shards[k]["count"]
        for field, (dtype, row_shape) in self._specs.items():
            path = self.directory / self._shards[k]["files"][field]
            try:
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                raise FormatError(str(path), message=f"unreadable shard file: {exc}", reason="bad shard") from None
            expected = (count, *row_shape)
            size = path.stat().st_size
            if array.shape != expected or array.dtype != np.dtype(dtype) or size != array.offset + array.nbytes:
                raise FormatError(
                    str(path),
                    None,
                    None,
                    f"{dtype} {list(expected)} as {INDEX_NAME} says",
                    f"{array.dtype} {list(array.shape)} ({size} bytes on disk)",
                    reason="shard disagrees with index",
                )
            maps[field] = array
        return maps

    def record_at(self, i: int) -> RegionRecord:
        """The i-th record in storage order."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"FeatureShards: index {i} out of range for {len(self)} records in {self.directory}")
        i %= len(self)
        if self._pid != os.getpid():
            self._reset()
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        row = i - int(self._starts[k])
        if self._maps[k] is None:
            self._maps[k] = self._open_shard(k)
        maps = self._maps[k]
        num = int(maps["num_boxes"][row])
        if not 0 <= num <= self.max_boxes:
            path = self.directory / self._shards[k]["files"]["num_boxes"]
            raise FormatError(str(path), row, "num_boxes", f"0..{self.max_boxes}", num, reason="bad num_boxes")
        image_w, image_h = (int(v) for v in maps["image_wh"][row])

        def read(field: str) -> np.ndarray | None:
            if field not in maps:
                return None
            return np.array(maps[field][row] if field == "image_box_feature" else maps[field][row, :num], np.float32)

        return RegionRecord(
            self._ids[i],
            image_w,
            image_h,
            read("boxes"),
            read("features"),
            read("classes"),
            read("image_box_feature"),
        )

    def __getitem__(self, image_id: str) -> RegionRecord:
        i = self._index_of().get(image_id)
        if i is None:
            raise KeyError(
                f"image_id {image_id!r} is not in the feature shards at {self.directory} ({len(self)} images)"
            )
        return self.record_at(i)

    def __repr__(self) -> str:
        return (
            f"FeatureShards({str(self.directory)!r}, {len(self)} records, D={self.feature_dim}, "
            f"C={self.num_classes}, max_boxes={self.max_boxes}, {self.dtype})"
        )
