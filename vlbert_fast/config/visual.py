"""The visual branch: precomputed region features, or the detector in the loop (end to end).

End to end (README.md, "The model, exactly"): image -> ResNet C4 (conv1 ... res4, stride 16) -> RoIAlign at 1/16
(pooled_size x pooled_size, sampling ratio 1) -> res5 (dilated, stride 1) -> average pool -> appearance of each
region. The defaults are the original's e2e configs (cfgs/pretrain/base_e2e_16x16G_fp16.yaml): ResNet-101, stages
1-2 and every BatchNorm frozen, Caffe BGR mean, short side 600 / long side 1000, flip with probability 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

VISUAL_MODES = ("precomputed", "e2e")
DEPTHS = (18, 34, 50, 101, 152)
NORMALIZATIONS = ("caffe", "torchvision")


@dataclass
class VisualConfig:
    mode: str = "precomputed"
    """"precomputed": region features are read from the data (feature shards or region JSONs); "e2e": the model
    reads each image and computes them with the ResNet below, trained with the rest."""

    depth: int = 101
    """ResNet depth: 18 or 34 (basic blocks), 50, 101 or 152 (bottlenecks)."""

    width: int = 64
    """Channels of the stem and of res2's 3x3 convolutions (torchvision's 64); the appearance width is 8 x width
    for basic blocks and 32 x width for bottlenecks (2048 at 64). Narrow it for a tiny CPU model."""

    stride_in_1x1: bool = True
    """Bottlenecks downsample in their first 1x1 convolution (Caffe and Detectron weights, the original's
    bottom-up-attention ResNet-101) instead of the 3x3 (torchvision weights: set false)."""

    frozen_stages: int = 2
    """Stages that never train: 1 freezes conv1 (the stem), 2 also res2, ... up to 4 (res4); 0 trains all.
    Frozen stages run without gradients and their BatchNorms never update."""

    frozen_bn: bool = True
    """Every BatchNorm is a fixed affine map (its statistics and scale/shift do not train), as detectors are
    fine-tuned; false: BatchNorms of the stages that train use and update batch statistics."""

    bn_eps: float = 1e-5
    """Epsilon of the BatchNorms (frozen or not); torchvision and Detectron2 use 1e-5."""

    res5_dilated: bool = True
    """res5 with stride 1 and dilation 2 (pooled_size x pooled_size out, the original); false: stride 2."""

    pooled_size: int = 14
    """RoIAlign output side (the original: 14); res5 and the average pool run on it."""

    sampling_ratio: int = 1
    """Bilinear samples per RoIAlign bin and axis (the original: 1; 0: adaptive, as torchvision allows)."""

    roi_align_backend: str = "auto"
    """Backend of vlbert_fast.ops.roi_align: auto, native, triton or reference."""

    channels_last: bool = True
    """Run the convolutions in channels-last layout on a GPU (faster with tensor cores; RoIAlign keeps the layout).
    CPU tensors stay contiguous: torch 2.13's CPU backward of a strided 1x1 convolution in channels-last corrupts
    memory."""

    pretrained: str = ""
    """ResNet weights to start from: a torchvision, Detectron2 or maskrcnn-benchmark state dict (.pth/.pt/
    .safetensors), or a checkpoint of ours. Empty: random initialisation (He normal, BatchNorm 1/0)."""

    normalization: str = "caffe"
    """Pixel normalisation: "caffe" (BGR order, 0-255, minus the mean 102.98, 115.95, 122.77, as the original's
    Caffe-trained ResNet expects) or "torchvision" (RGB in [0, 1], ImageNet mean and std)."""

    short_side: int = 600
    """Images are resized so that their short side has this many pixels ..."""

    long_side: int = 1000
    """... unless the long side would exceed this many; then the long side gets it."""

    flip_prob: float = 0.5
    """Chance that a training image is flipped horizontally (boxes follow; "left" and "right" swap in the text)."""

    min_image_side: int = 10
    """Images with a side shorter than this are rejected (a record error: raised, or skipped and counted)."""

    max_image_side: int = 10000
    """Images with a side longer than this are rejected before they are decoded."""

    def __post_init__(self) -> None:
        if self.mode not in VISUAL_MODES:
            raise ValueError(f"mode must be one of {', '.join(VISUAL_MODES)}, found {self.mode!r}")
        if self.depth not in DEPTHS:
            raise ValueError(f"depth must be one of {DEPTHS}, found {self.depth}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, found {self.normalization!r}")
        if self.width < 1:
            raise ValueError(f"width must be positive, found {self.width}")
        if not 0 <= self.frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in 0..4 (stem, res2, res3, res4), found {self.frozen_stages}")
        if self.pooled_size < 1 or self.sampling_ratio < 0:
            raise ValueError("pooled_size must be >= 1 and sampling_ratio >= 0")
        if self.roi_align_backend not in ("auto", "native", "triton", "reference"):
            raise ValueError(
                f"roi_align_backend must be auto, native, triton or reference, found {self.roi_align_backend!r}"
            )
        if self.bn_eps <= 0:
            raise ValueError(f"bn_eps must be positive, found {self.bn_eps}")
        if not 0 < self.short_side <= self.long_side:
            raise ValueError(f"need 0 < short_side <= long_side, found {self.short_side} and {self.long_side}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], found {self.flip_prob}")
        if not 1 <= self.min_image_side <= self.max_image_side:
            raise ValueError("need 1 <= min_image_side <= max_image_side")

    @property
    def end_to_end(self) -> bool:
        return self.mode == "e2e"

    @property
    def bottleneck(self) -> bool:
        return self.depth >= 50

    @property
    def out_channels(self) -> int:
        """Width of the appearance feature res5 produces."""
        return self.width * 8 * (4 if self.bottleneck else 1)
