"""Region inputs of a task sample, from the same feature shards pretraining reads (data/formats/shard_layout.py).

An image's regions as the model takes them: the whole-image box [0, 0, W-1, H-1] first, with the file's
`image_box_feature` or the mean of the detections' features, then the detections by confidence (at most
`max_regions`), clipped to the image (a box wholly outside it is an error: `clip_to_image`), as pretraining builds
them (data/caption_dataset.py `CaptionDataset._regions`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.formats import FeatureShards, FormatError, clip_to_image


@dataclass
class Regions:
    boxes: torch.Tensor
    """[R, 4] float32, the whole image first."""
    features: torch.Tensor
    """[R, D] float32."""
    image_size: tuple[float, float]
    """(W, H)."""
    detection_order: np.ndarray
    """[R - 1] index into the file's detections of each region after the whole image."""


def load_regions(shards: FeatureShards, key: str, max_regions: int, feature_dim: int, where: str) -> Regions:
    """The regions of image `key`; `where` names the sample for errors (file and record)."""
    if key not in shards:
        raise FormatError(
            f"{where}: image {key!r} is not in the feature shards at {shards.directory} ({len(shards)} images)",
            reason="not in shards",
        )
    region = shards[key]
    feats = region.features
    if feats.shape[1] != feature_dim:
        raise FormatError(f"{where}: region features are {feats.shape[1]}-d, model.visual_feature_dim is {feature_dim}")
    cls = region.classes
    order = np.argsort(-cls.max(axis=1), kind="stable") if cls is not None else np.arange(region.num_boxes)
    order = order[:max_regions]
    w, h = float(region.image_w), float(region.image_h)
    det_boxes = clip_to_image(region.boxes[order], w, h, f"{where}, image {key!r}")  # the rule of every mode
    if region.image_box_feature is not None:
        whole = region.image_box_feature.astype(np.float32)
    else:
        whole = feats.mean(axis=0) if len(feats) else np.zeros(feats.shape[1], dtype=np.float32)
    boxes = np.concatenate([np.array([[0.0, 0.0, w - 1, h - 1]], dtype=np.float32), det_boxes])
    features = np.concatenate([whole[None].astype(np.float32), feats[order].astype(np.float32)])
    return Regions(torch.from_numpy(boxes), torch.from_numpy(features), (w, h), order)
