"""The synthetic world's region-feature extractor: deterministic, reads only the pixels inside the box.

descriptor = [3 x mean colour of the object pixels, fill ratio, 8x8 occupancy grid of the object mask]
feature    = FEATURE_SCALE * ReLU(W descriptor + b), W and b fixed by EXTRACTOR_SEED (one extractor for every world)

Colour is recoverable from the mean colour, shape from the occupancy grid and fill ratio (a square fills its box,
a circle about 79%, a triangle and a diamond about half, in different places). Object pixels are told from the
background by brightness: the background noise stays below 30/255, every colour is far above.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

EXTRACTOR_SEED = 20200908
# Real res5 features (2048-d, after ReLU and pooling) have a norm comparable to the 2048-d geometry encoding's
# (~32) next to them in the projection's input; unscaled, these 128-d features would have a norm of ~6 and the
# image would be a faint signal beside the box geometry. The scale restores the real balance.
FEATURE_SCALE = 5.0
GRID = 8
DESCRIPTOR_DIM = 3 + 1 + GRID * GRID
FOREGROUND = 0.25


def descriptor(pixels_HW3: np.ndarray) -> np.ndarray:
    """[DESCRIPTOR_DIM] float32 from the uint8 pixels of one box."""
    crop = pixels_HW3.astype(np.float32) / 255.0
    if crop.size == 0:
        return np.zeros(DESCRIPTOR_DIM, dtype=np.float32)
    fg = crop.max(axis=-1) > FOREGROUND
    colour = crop[fg].mean(axis=0) if fg.any() else np.zeros(3, dtype=np.float32)
    grid = Image.fromarray(fg.astype(np.uint8) * 255).resize((GRID, GRID), Image.Resampling.BOX)
    occupancy = np.asarray(grid, dtype=np.float32).reshape(-1) / 255.0
    return np.concatenate([3.0 * colour, [fg.mean()], occupancy]).astype(np.float32)


class RegionExtractor:
    def __init__(self, feature_dim: int):
        rng = np.random.default_rng(EXTRACTOR_SEED)
        self.weight = (rng.standard_normal((feature_dim, DESCRIPTOR_DIM)) / np.sqrt(DESCRIPTOR_DIM)).astype(np.float32)
        self.bias = (0.1 * rng.standard_normal(feature_dim)).astype(np.float32)

    def __call__(self, image_HW3: np.ndarray, boxes_N4: np.ndarray) -> np.ndarray:  # [N, feature_dim] float32
        h, w = image_HW3.shape[:2]
        rows = []
        for x1, y1, x2, y2 in boxes_N4:
            xa, ya = int(np.clip(np.floor(x1), 0, w - 1)), int(np.clip(np.floor(y1), 0, h - 1))
            xb, yb = int(np.clip(np.ceil(x2), 0, w - 1)), int(np.clip(np.ceil(y2), 0, h - 1))
            rows.append(descriptor(image_HW3[ya : yb + 1, xa : xb + 1]))
        desc = np.stack(rows) if rows else np.zeros((0, DESCRIPTOR_DIM), dtype=np.float32)
        return (FEATURE_SCALE * np.maximum(desc @ self.weight.T + self.bias, 0.0)).astype(np.float32)
