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
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..config import ModelConfig

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


def batch_training_flops(cfg: ModelConfig, batch) -> float:
    """Training FLOPs (forward + backward) of one micro batch."""
    masked = int((batch.mlm_labels != -100).sum()) if batch.mlm_labels is not None else 0
    predicted = int(batch.region_predict.sum()) if batch.region_predict is not None else 0
    parts = forward_flops(cfg, batch.seq_lens.tolist(), batch.num_regions, masked, predicted)
    return 3.0 * sum(parts.values())


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
