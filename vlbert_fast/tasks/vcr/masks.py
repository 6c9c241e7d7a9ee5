"""VCR's segmentation polygons -> one S x S instance mask per box, in the box's own frame (the original's 14 x 14).

Frame: box (x1, y1, x2, y2) in pixel indices covers x2 - x1 + 1 pixels across (the original's convention), so
mask cell (r, c) covers x in [x1 + c (x2 - x1 + 1) / S, x1 + (c + 1) (x2 - x1 + 1) / S) and likewise in y.
A cell is on (1.0) when at least half of its area lies inside the union of the object's polygons. The polygons are
rasterised with PIL at SUPERSAMPLE x SUPERSAMPLE points per cell and the coverage averaged.

Where the original differs: it clamps each vertex into the box before filling (skimage's polygon, cell centres at
integer coordinates), so a polygon reaching outside the box is squashed onto the box's border and a polygon wholly
outside leaves a line of cells on the border. We clip instead: only the part of the polygon inside the box counts,
and a polygon outside the box gives no cell. For polygons inside their box, as VCR's are, the two agree up to the
cells the polygon's edge half-covers.

The masks are used in end-to-end mode only (model.visual.mode = e2e): the 14 x 14 RoIAlign output of each region
is multiplied by its mask before the res5 head. With precomputed region features there is no RoI grid to mask; the
features are whatever the extractor computed for the whole box.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

SUPERSAMPLE = 8
"""Sample points per cell and axis: coverage in steps of 1/64, enough to decide the half-covered threshold."""
COVERAGE = 0.5


def polygon_mask(
    polygons: Sequence[Sequence[Sequence[float]]], box: Sequence[float], size: int = 14
) -> torch.Tensor:  # [size, size] float32 0/1
    """The mask of one object: `polygons` a list of polygons, each a list of (x, y) image points; `box` (x1, y1, x2,
    y2). Polygons of fewer than 3 points have no area and are skipped."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    if x2 < x1 or y2 < y1:
        raise ValueError(f"polygon_mask: box {list(box)} has x2 < x1 or y2 < y1 (expected x1, y1, x2, y2)")
    if size < 1:
        raise ValueError(f"polygon_mask: size must be >= 1, found {size}")
    fine = size * SUPERSAMPLE
    # image x -> supersampled pixel coordinate; PIL's pixel i spans [i, i + 1) with its centre at i + 0.5
    sx, sy = fine / (x2 - x1 + 1.0), fine / (y2 - y1 + 1.0)
    canvas = Image.new("L", (fine, fine), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        if len(poly) < 3:
            continue
        points = [((float(x) - x1) * sx - 0.5, (float(y) - y1) * sy - 0.5) for x, y in poly]
        draw.polygon(points, fill=1)
    covered = np.asarray(canvas, dtype=np.float32).reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))
    return torch.from_numpy((covered >= COVERAGE).astype(np.float32))


def instance_masks(
    segms: Sequence[Sequence[Sequence[Sequence[float]]]], boxes: Sequence[Sequence[float]], size: int = 14
) -> torch.Tensor:  # [N, size, size]
    """One mask per object (segms[i] are the polygons of boxes[i])."""
    if len(segms) != len(boxes):
        raise ValueError(f"instance_masks: {len(segms)} polygon lists for {len(boxes)} boxes (one per box expected)")
    if not boxes:
        return torch.zeros(0, size, size)
    return torch.stack([polygon_mask(p, b, size) for p, b in zip(segms, boxes, strict=True)])
