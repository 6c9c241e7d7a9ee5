"""Region features of the RefCOCO+ RoIs, read from the region-feature formats pretraining reads.

A protocol decides the RoIs (the image's COCO annotation boxes, or the detections file's boxes); their appearance
features come from a region store keyed by image id that holds features for those boxes: feature shards (a
directory with index.json, made by `vlbert-fast convert-features` or `extract-features`), a bottom-up-attention
TSV, or a directory of the original's per-image region JSONs named `<image_id>.json`. Each RoI takes the row of
the image's record whose box is nearest (largest coordinate difference) and within `tolerance` pixels: one store
can then hold the features of both protocols' boxes, in any order, and a RoI without features is an error that
names the image and the box rather than a silent mismatch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...data.formats import FeatureShards, FormatError, RegionRecord, read_bua_tsv, read_region_json
from ...data.formats.shard_layout import INDEX_NAME


class RegionStore:
    def __init__(self, path: str | os.PathLike, tolerance: float = 0.5):
        self.path = Path(path)
        self.tolerance = tolerance
        self._shards: FeatureShards | None = None
        self._records: dict[str, RegionRecord] | None = None
        if (self.path / INDEX_NAME).is_file():
            self._shards = FeatureShards(self.path)
        elif self.path.is_file() and self.path.suffix == ".tsv":
            self._records = {r.image_id: r for r in read_bua_tsv(self.path)}
        elif not self.path.is_dir():
            raise FormatError(
                os.fspath(self.path),
                message="no region features here: expected a feature-shard directory (with index.json), a "
                "bottom-up-attention .tsv, or a directory of <image_id>.json region files",
                reason="no region features",
            )

    def record(self, image_id: int) -> RegionRecord:
        key = str(image_id)
        if self._shards is not None:
            if key not in self._shards:
                raise FormatError(os.fspath(self.path), key, message="no region features for this image id")
            return self._shards[key]
        if self._records is not None:
            if key not in self._records:
                raise FormatError(os.fspath(self.path), key, message="no region features for this image id")
            return self._records[key]
        file = self.path / f"{key}.json"
        if not file.is_file():
            raise FormatError(os.fspath(file), key, message="no region JSON for this image id")
        return read_region_json(file.read_bytes(), source=os.fspath(file))

    def features(self, image_id: int, boxes_R4: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray | None]:
        """([R, D] float32 features of the given boxes, the record's whole-image feature or None)."""
        record = self.record(image_id)
        boxes = np.asarray(boxes_R4, dtype=np.float64).reshape(-1, 4)
        if record.num_boxes == 0:
            if len(boxes):
                raise FormatError(os.fspath(self.path), image_id, message=f"{where}: the image's record has no boxes")
            return np.zeros((0, record.features.shape[-1]), np.float32), record.image_box_feature
        gap_RN = np.abs(boxes[:, None, :] - record.boxes[None, :, :].astype(np.float64)).max(-1)
        nearest = gap_RN.argmin(1)
        worst = int(np.argmax(gap_RN[np.arange(len(boxes)), nearest])) if len(boxes) else 0
        if len(boxes) and gap_RN[worst, nearest[worst]] > self.tolerance:
            raise FormatError(
                os.fspath(self.path),
                image_id,
                "boxes",
                f"a box within {self.tolerance} px of {boxes[worst].round(2).tolist()} ({where})",
                f"the nearest is {record.boxes[nearest[worst]].round(2).tolist()}: extract features for this "
                "protocol's boxes",
            )
        return record.features[nearest].astype(np.float32), record.image_box_feature
