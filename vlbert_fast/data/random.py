"""Random examples that satisfy the model's contract, for tests and benchmarks.

Each example has random word ids (ids 0-4 are left to the special tokens), 15% MLM labels, and either a whole-image
box plus random detections with non-negative features, masked/predicted regions and soft class targets, or (with
probability `text_only`) no regions at all.
"""

from __future__ import annotations

import torch

from ..config import ModelConfig
from .batch import IGNORE_INDEX
from .collate import Example


def random_example(
    cfg: ModelConfig,
    generator: torch.Generator,
    text_len: tuple[int, int] = (4, 24),
    num_regions: tuple[int, int] = (1, 12),
    text_only: float = 0.5,
    image_wh: tuple[int, int] = (640, 480),
) -> Example:
    def randint(lo: int, hi: int, shape=()) -> torch.Tensor:
        return torch.randint(lo, hi + 1, shape, generator=generator)

    t = int(randint(*text_len))
    ids = randint(5, cfg.vocab_size - 1, (t,))
    chosen = torch.rand(t, generator=generator) < 0.15
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    ex = Example(input_ids=ids, mlm_labels=labels)
    if float(torch.rand((), generator=generator)) < text_only:
        return ex
    w, h = image_wh
    r = int(randint(*num_regions))
    xy = torch.rand(r, 2, generator=generator) * torch.tensor([w - 1.0, h - 1.0])
    wh = torch.rand(r, 2, generator=generator) * torch.tensor([w / 2.0, h / 2.0])
    boxes = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([w - 1.0, h - 1.0]))], dim=1)
    boxes[0] = torch.tensor([0.0, 0.0, w - 1.0, h - 1.0])
    predict = torch.rand(r, generator=generator) < 0.15
    predict[0] = False  # the whole-image box is never masked
    masked = predict & (torch.rand(r, generator=generator) < 0.9)
    ex.boxes = boxes
    ex.image_size = (float(w), float(h))
    ex.region_features = torch.relu(torch.randn(r, cfg.visual_feature_dim, generator=generator))
    ex.region_masked = masked
    ex.region_predict = predict
    ex.roi_targets = torch.softmax(torch.randn(r, cfg.num_roi_classes, generator=generator) * 3, dim=-1)
    return ex


def random_examples(cfg: ModelConfig, count: int, seed: int = 0, **kwargs) -> list[Example]:
    generator = torch.Generator().manual_seed(seed)
    return [random_example(cfg, generator, **kwargs) for _ in range(count)]
