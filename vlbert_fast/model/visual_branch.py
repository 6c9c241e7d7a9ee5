"""The detector in the loop: images -> ResNet C4 -> RoIAlign -> res5 -> average pool -> region appearance.

Legend: I images, K regions, C4 res4 channels, D appearance width (res5 channels), P pooled side, H W pixels.

- trunk: conv1 (7x7, stride 2) + max pool, res2 (layer1), res3 (layer2, /2), res4 (layer3, /2): stride 16;
- RoIAlign of each region's box on its image's res4 map: P x P bins at spatial scale 1/16, `sampling_ratio`
  samples per bin and axis, legacy (not half-pixel-aligned) boxes, as the original and Detectron's C4 heads;
- optional instance masks (VCR's polygons, [K, P, P] in each box's frame) multiply the pooled maps, as the
  original's VCR model does, so res5 sees only the object's cells;
- head: res5 (layer4) on the pooled maps, stride 1 with dilation 2 (P x P out) or stride 2, then the mean over the
  spatial positions (the original's AvgPool2d(14) on 14 x 14) -> [K, D].

Frozen stages (`frozen_stages`: 1 the stem, 2 also res2, ...) have requires_grad off and frozen BatchNorms, so no
optimizer step can move them and no autograd graph is recorded through them. The module's parameter names are
torchvision's (conv1, bn1, layer1..layer4), see model/backbone.py and model/resnet_weights.py.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import VisualConfig
from ..ops import roi_align
from .backbone import BLOCKS_PER_STAGE, init_resnet, make_norm, make_stage

SPATIAL_SCALE = 1.0 / 16  # res4 has stride 16


class VisualBranch(nn.Module):
    def __init__(self, cfg: VisualConfig):
        super().__init__()
        self.cfg = cfg
        block, counts = BLOCKS_PER_STAGE[cfg.depth]
        w, eps, s1x1 = cfg.width, cfg.bn_eps, cfg.stride_in_1x1

        def frozen_bn(stage: int) -> bool:  # stage 1 is the stem, stage 2 res2 (layer1), ...
            return cfg.frozen_bn or stage <= cfg.frozen_stages

        self.conv1 = nn.Conv2d(3, w, 7, stride=2, padding=3, bias=False)
        self.bn1 = make_norm(w, frozen_bn(1), eps)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        e = block.expansion
        self.layer1 = make_stage(block, w, w, counts[0], 1, 1, frozen_bn(2), eps, s1x1)
        self.layer2 = make_stage(block, w * e, 2 * w, counts[1], 2, 1, frozen_bn(3), eps, s1x1)
        self.layer3 = make_stage(block, 2 * w * e, 4 * w, counts[2], 2, 1, frozen_bn(4), eps, s1x1)
        stride, dilation = (1, 2) if cfg.res5_dilated else (2, 1)
        self.layer4 = make_stage(block, 4 * w * e, 8 * w, counts[3], stride, dilation, frozen_bn(5), eps, s1x1)
        self.out_channels = 8 * w * e
        init_resnet(self)
        for module in self.frozen_modules():
            module.requires_grad_(False)
        self.load_report = None
        if cfg.pretrained:
            from .resnet_weights import load_resnet_weights

            self.load_report = load_resnet_weights(self, cfg.pretrained)

    def frozen_modules(self) -> list[nn.Module]:
        stages = [[self.conv1, self.bn1], [self.layer1], [self.layer2], [self.layer3]]
        return [m for stage in stages[: self.cfg.frozen_stages] for m in stage]

    def train(self, mode: bool = True) -> VisualBranch:
        super().train(mode)
        for module in self.frozen_modules():  # a frozen stage's BatchNorm must not update its statistics
            module.eval()
        return self

    def trunk(self, images_I3HW: torch.Tensor) -> torch.Tensor:  # [I, C4, H/16, W/16]
        # CUDA only: on the CPU, torch 2.13's backward of a strided 1x1 convolution (the downsample of res3/res4)
        # in channels-last corrupts memory (segfaults and aborts seen here); the CPU path stays contiguous.
        if self.cfg.channels_last and images_I3HW.is_cuda:
            images_I3HW = images_I3HW.contiguous(memory_format=torch.channels_last)
        x = self.maxpool(self.relu(self.bn1(self.conv1(images_I3HW))))
        return self.layer3(self.layer2(self.layer1(x)))

    def pool(self, fmap_IC4: torch.Tensor, boxes_K4: torch.Tensor, image_K: torch.Tensor) -> torch.Tensor:
        """[K, C4, P, P] RoIAlign of each box (x1, y1, x2, y2 in image pixels) on the map of image image_K[k]."""
        # boxes stay fp32 next to bf16/fp16 maps: pixel coordinates need the mantissa
        box_dtype = fmap_IC4.dtype if fmap_IC4.dtype in (torch.float32, torch.float64) else torch.float32
        rois_K5 = torch.cat([image_K[:, None].to(box_dtype), boxes_K4.to(box_dtype)], dim=1)
        p = self.cfg.pooled_size
        return roi_align(
            fmap_IC4,
            rois_K5,
            output_size=(p, p),
            spatial_scale=SPATIAL_SCALE,
            sampling_ratio=self.cfg.sampling_ratio,
            aligned=False,
            backend=self.cfg.roi_align_backend,
        )

    def head(self, pooled_KC4PP: torch.Tensor) -> torch.Tensor:  # [K, D]
        return self.layer4(pooled_KC4PP).mean(dim=(2, 3))

    def forward(
        self,
        images_I3HW: torch.Tensor,  # normalised, zero-padded images
        boxes_K4: torch.Tensor,  # (x1, y1, x2, y2) in the pixels of the (resized) image
        image_K: torch.Tensor,  # [K] int64 index of each region's image
        masks_KPP: torch.Tensor | None = None,  # [K, P, P] 0/1 instance masks in each box's frame (VCR), or None
    ) -> torch.Tensor:  # [K, D] appearance
        pooled_KC4PP = self.pool(self.trunk(images_I3HW), boxes_K4, image_K)
        if masks_KPP is not None:
            # The original's VCR head: the object's segmentation zeroes the RoI cells outside it before res5.
            p = self.cfg.pooled_size
            if tuple(masks_KPP.shape) != (pooled_KC4PP.shape[0], p, p):
                raise ValueError(
                    f"region_masks: expected shape [K, {p}, {p}] (model.visual.pooled_size) with K = "
                    f"{pooled_KC4PP.shape[0]}, found {tuple(masks_KPP.shape)}"
                )
            pooled_KC4PP = pooled_KC4PP * masks_KPP[:, None].to(pooled_KC4PP.dtype)
        return self.head(pooled_KC4PP)
