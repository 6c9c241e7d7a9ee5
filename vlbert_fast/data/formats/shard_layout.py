"""Our region-feature format, version 2: ragged shards of .npy files and a binary index, read through memory maps
(this module: the layout and the definitions writer and reader share; the writer: shard_writer.py; the reader:
shard_reader.py; its checks: shard_checks.py).

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

from dataclasses import dataclass

import numpy as np

from .errors import FormatError
from .regions import RegionRecord

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
