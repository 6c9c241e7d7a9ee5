"""The visual feature of a region, precomputed mode (README.md, "The model, exactly").

Legend: K regions, Dv appearance width (2048), Dg geometry width (2048), H hidden size.

feature = ReLU(Linear(Dropout(concat(appearance, geometry)))), with geometry the sinusoidal box encoding of
`vlbert_fast.ops.box_geometry_embedding`. The concatenation is one preallocated [K, Dv + Dg] buffer: the geometry op
writes its columns in place (backend from `cfg.kernels`) and the appearance is copied next to it, so the geometry
is never materialised on its own. A masked region's appearance is replaced by a learned vector
(zero at initialisation); the whole-image region's appearance is recomputed from the unmasked regions by the data
pipeline before it gets here, as the original does.

Note: ours orders the concat appearance first; the original code (common/fast_rcnn.py) puts geometry first.
Converting an original checkpoint swaps the two column halves of the projection's weight.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..ops import box_geometry_embedding


class RegionEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.mask_appearance = nn.Parameter(torch.zeros(cfg.visual_feature_dim))
        self.dropout = nn.Dropout(cfg.visual_dropout)
        self.projection = nn.Linear(cfg.visual_feature_dim + cfg.geometry_dim, cfg.hidden_size)

    def forward(
        self,
        appearance_KD: torch.Tensor,  # [K, Dv]
        boxes_K4: torch.Tensor,  # [K, 4] (x1, y1, x2, y2)
        image_size_K2: torch.Tensor,  # [K, 2] (W, H) of each region's image
        masked_K: torch.Tensor | None = None,  # [K] bool, appearance hidden
    ) -> torch.Tensor:  # [K, H]
        k, dv = appearance_KD.shape
        features_KF = appearance_KD.new_empty(k, dv + self.cfg.geometry_dim)
        box_geometry_embedding(
            boxes_K4,
            image_size_K2,
            dim=self.cfg.geometry_dim,
            wave_length=self.cfg.geometry_wave_length,
            scale=self.cfg.geometry_scale,
            backend=self.cfg.kernels,
            out=features_KF[:, dv:],
        )
        if masked_K is not None:
            appearance_KD = torch.where(masked_K[:, None], self.mask_appearance.to(appearance_KD.dtype), appearance_KD)
        features_KF[:, :dv] = appearance_KD  # autograd routes the gradient of these columns to the appearance
        return torch.relu(self.projection(self.dropout(features_KF)))
