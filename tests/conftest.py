"""Test setup. TRITON_INTERPRET must be set before any kernel module is imported (it is read when @triton.jit
runs), so it is set here, first. DeepSpeed is told to use its CPU accelerator quietly."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from vlbert_fast.config import ModelConfig  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run `pytest -m gpu` on the GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_cfg() -> ModelConfig:
    """A small model with dropout off, so outputs are deterministic, and the original's zero visual gains."""
    return ModelConfig(
        visual_scale_text_init=0.0,
        visual_scale_object_init=0.0,
        vocab_size=211,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=64,
        visual_feature_dim=40,
        geometry_dim=32,
        num_roi_classes=17,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        visual_dropout=0.0,
    )
