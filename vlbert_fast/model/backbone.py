"""ResNet building blocks of the visual branch: frozen BatchNorm, basic and bottleneck blocks, stages.

Legend: N images (or regions, in res5), C channels, H W spatial size.

Parameter names are torchvision's (conv1, bn1, layer1 ... layer4; in a block conv1..3, bn1..3, downsample.0 (conv)
and downsample.1 (norm)), so torchvision state dicts load unchanged and other detectors' names map onto them
(model/resnet_weights.py). Two conventions differ between the checkpoints users bring:
- where a bottleneck downsamples: torchvision in the 3x3 convolution, Caffe/Detectron (the original's
  bottom-up-attention ResNet-101) in the first 1x1 (`stride_in_1x1`);
- BatchNorm: detectors fine-tune with it frozen, a fixed per-channel affine map (`FrozenBatchNorm2d`), whose
  state-dict entries (weight, bias, running_mean, running_var) are those of nn.BatchNorm2d.
"""

from __future__ import annotations

import torch
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters: y = (x - mean) / sqrt(var + eps) * weight + bias.

    All four are buffers, so no optimizer sees them and train() changes nothing; folded into one scale and shift per
    channel at run time (one multiply-add over the activation)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x_NCHW: torch.Tensor) -> torch.Tensor:
        scale_C = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift_C = self.bias - self.running_mean * scale_C
        return x_NCHW * scale_C.to(x_NCHW.dtype)[:, None, None] + shift_C.to(x_NCHW.dtype)[:, None, None]

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def make_norm(channels: int, frozen: bool, eps: float) -> nn.Module:
    return FrozenBatchNorm2d(channels, eps) if frozen else nn.BatchNorm2d(channels, eps=eps)


def conv3x3(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    # padding = dilation keeps the size at stride 1 for any dilation
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34)."""

    expansion = 1

    def __init__(self, c_in, planes, stride, dilation, downsample, frozen_bn, eps, stride_in_1x1=False):
        super().__init__()
        self.conv1 = conv3x3(c_in, planes, stride, dilation)
        self.bn1 = make_norm(planes, frozen_bn, eps)
        self.conv2 = conv3x3(planes, planes, 1, dilation)
        self.bn2 = make_norm(planes, frozen_bn, eps)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x_NCHW: torch.Tensor) -> torch.Tensor:
        identity = x_NCHW if self.downsample is None else self.downsample(x_NCHW)
        out = self.relu(self.bn1(self.conv1(x_NCHW)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 down, 3x3, 1x1 up by 4 (ResNet-50/101/152); the stride sits in the first 1x1 or in the 3x3."""

    expansion = 4

    def __init__(self, c_in, planes, stride, dilation, downsample, frozen_bn, eps, stride_in_1x1=False):
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(c_in, planes, 1, stride=s1, bias=False)
        self.bn1 = make_norm(planes, frozen_bn, eps)
        self.conv2 = conv3x3(planes, planes, s3, dilation)
        self.bn2 = make_norm(planes, frozen_bn, eps)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = make_norm(planes * 4, frozen_bn, eps)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x_NCHW: torch.Tensor) -> torch.Tensor:
        identity = x_NCHW if self.downsample is None else self.downsample(x_NCHW)
        out = self.relu(self.bn1(self.conv1(x_NCHW)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


BLOCKS_PER_STAGE = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def make_stage(
    block: type[nn.Module],
    c_in: int,
    planes: int,
    blocks: int,
    stride: int,
    dilation: int,
    frozen_bn: bool,
    eps: float,
    stride_in_1x1: bool,
) -> nn.Sequential:
    """One ResNet stage (torchvision's layerN). Every block of a dilated stage is dilated (Detectron's res5)."""
    c_out = planes * block.expansion
    downsample = None
    if stride != 1 or c_in != c_out:
        downsample = nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), make_norm(c_out, frozen_bn, eps)
        )
    layers = [block(c_in, planes, stride, dilation, downsample, frozen_bn, eps, stride_in_1x1)]
    layers += [block(c_out, planes, 1, dilation, None, frozen_bn, eps, stride_in_1x1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def init_resnet(module: nn.Module) -> None:
    """He initialisation of convolutions (fan-out, as torchvision), BatchNorms at the identity."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, FrozenBatchNorm2d):
            m.weight.fill_(1.0)
            m.bias.zero_()
            m.running_mean.zero_()
            m.running_var.fill_(1.0)
