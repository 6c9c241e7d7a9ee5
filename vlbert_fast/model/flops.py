"""Analytic FLOP count of a VL-BERT training step, for TFLOP/s and MFU.

Counted: matrix multiplications (2 FLOPs per multiply-add), on the tokens that exist (no padding), heads only on
the positions they run on. Elementwise work (embedding sums, LayerNorm, GELU, softmax) is left out, as MFU
conventions do. Legend: H hidden, I intermediate, L layers, n tokens of a sample, K regions, Dv + Dg the visual
projection's input, M masked words, P predicted regions, V vocabulary, C classes.

forward =   K * 2 (Dv + Dg) H                                region projection
          + L * sum_samples [ n (2 * 3H^2 + 2 H^2 + 2 * 2 H I) + 2 * 2 n^2 H ]
                                                             QKV, output, FFN; QK^T and PV
          + M (2 H^2 + 2 H V)                                MLM transform and decoder
          + P (2 H^2 + 2 H C)                                masked-RoI transform and classifier
training = 3 x forward (the backward pass costs twice the forward: gradients of inputs and of weights).

End to end, add the ResNet's convolutions (2 Cin k^2 Cout per output position): conv1 ... res4 on the I padded
images of the batch (the work done, padding included), res5 on the K pooled P x P regions. In training a frozen
stage runs forward only (1x); the first convolutions after it (or conv1 on the pixels) compute weight gradients
but no input gradient (2x); every other trainable convolution 3x.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..config import ModelConfig, VisualConfig

# Dense bf16/fp16 tensor-core peaks in TFLOP/s from the vendors' data sheets (no sparsity), for MFU when the config
# gives no peak. Matched against torch.cuda.get_device_name() by substring, first match wins.
PEAK_TFLOPS_BF16 = (
    ("H200", 989.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A10G", 125.0),
    ("V100", 125.0),
)


def forward_flops(
    cfg: ModelConfig, seq_lens: Sequence[int], num_regions: int, num_masked_words: int, num_predicted_regions: int
) -> dict[str, float]:
    """Forward FLOPs by part (module docstring)."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    dense_per_token = 2 * 3 * h * h + 2 * h * h + 2 * 2 * h * i
    encoder = cfg.num_hidden_layers * sum(n * dense_per_token + 2 * 2 * n * n * h for n in seq_lens)
    return {
        "visual_projection": 2.0 * num_regions * (cfg.visual_feature_dim + cfg.geometry_dim) * h,
        "encoder": float(encoder),
        "mlm_head": 2.0 * num_masked_words * (h * h + h * cfg.vocab_size),
        "roi_head": 2.0 * num_predicted_regions * (h * h + h * cfg.num_roi_classes),
    }


def _conv_out(size: int, kernel: int, stride: int, dilation: int) -> int:
    padding = dilation * (kernel // 2)  # every ResNet convolution pads to keep the size at stride 1
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _visual_convs(v: VisualConfig, height: int, width: int) -> list[tuple[str, float, int]]:
    """(part, forward FLOPs per image or per region, training passes) of every convolution of the visual branch."""
    from ..model.backbone import BLOCKS_PER_STAGE

    block, counts = BLOCKS_PER_STAGE[v.depth]
    e = block.expansion
    convs: list[tuple[str, float, int]] = []
    first_trainable = v.frozen_stages + 1  # stage 1 is the stem, 2..5 are res2..res5

    def add(part, stage, first, c_in, c_out, k, stride, dilation, size):
        out = (_conv_out(size[0], k, stride, dilation), _conv_out(size[1], k, stride, dilation))
        passes = 1 if stage < first_trainable else (2 if (stage == first_trainable and first) else 3)
        convs.append((part, 2.0 * c_in * k * k * c_out * out[0] * out[1], passes))
        return out

    size = add("backbone", 1, True, 3, v.width, 7, 2, 1, (height, width))
    size = (_conv_out(size[0], 3, 2, 1), _conv_out(size[1], 3, 2, 1))  # max pool
    c_in = v.width
    for stage in (2, 3, 4, 5):
        planes, stride, dilation = v.width * 2 ** (stage - 2), (1 if stage == 2 else 2), 1
        part = "backbone" if stage < 5 else "roi_head"
        if stage == 5:
            size = (v.pooled_size, v.pooled_size)
            stride, dilation = (1, 2) if v.res5_dilated else (2, 1)
        for b in range(counts[stage - 2]):
            s = stride if b == 0 else 1
            if b == 0 and (s != 1 or c_in != planes * e):
                add(part, stage, True, c_in, planes * e, 1, s, 1, size)
            if e == 4:
                s1, s3 = (s, 1) if v.stride_in_1x1 else (1, s)
                mid = add(part, stage, b == 0, c_in, planes, 1, s1, 1, size)
                mid = add(part, stage, False, planes, planes, 3, s3, dilation, mid)
                size = add(part, stage, False, planes, planes * 4, 1, 1, 1, mid)
            else:
                mid = add(part, stage, b == 0, c_in, planes, 3, s, dilation, size)
                size = add(part, stage, False, planes, planes, 3, 1, dilation, mid)
            c_in = planes * e
    return convs


def visual_flops(v: VisualConfig, num_images: int, height: int, width: int, num_regions: int) -> dict[str, float]:
    """End-to-end visual branch: forward FLOPs of the backbone (conv1 ... res4 on the padded images) and of the RoI
    head (res5 on the regions), and `training`, the forward + backward FLOPs of both (module docstring)."""
    parts = {"backbone": 0.0, "roi_head": 0.0, "training": 0.0}
    for part, flops, passes in _visual_convs(v, height, width):
        count = num_images if part == "backbone" else num_regions
        parts[part] += count * flops
        parts["training"] += count * flops * passes
    return parts


def batch_training_flops(cfg: ModelConfig, batch) -> float:
    """Training FLOPs (forward + backward) of one micro batch."""
    masked = int((batch.mlm_labels != -100).sum()) if batch.mlm_labels is not None else 0
    predicted = int(batch.region_predict.sum()) if batch.region_predict is not None else 0
    parts = forward_flops(cfg, batch.seq_lens.tolist(), batch.num_regions, masked, predicted)
    total = 3.0 * sum(parts.values())
    images = getattr(batch, "images", None)
    if cfg.visual.end_to_end and images is not None:
        total += visual_flops(cfg.visual, images.shape[0], images.shape[2], images.shape[3], batch.num_regions)[
            "training"
        ]
    return total


def peak_tflops(configured: float, device: torch.device) -> float | None:
    """Peak TFLOP/s per device for MFU: the configured value, else the table for a known GPU, else None."""
    if configured > 0:
        return configured
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in PEAK_TFLOPS_BF16:
            if key in name:
                return value
    return None
