"""The FLOP counter counts the end-to-end visual branch exactly as PyTorch's FlopCounterMode does: the forward of
the whole e2e model, and the forward + backward of the branch, where frozen stages run no backward and the first
trainable convolutions compute no input gradient."""

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from vlbert_fast.config import ModelConfig, VisualConfig
from vlbert_fast.data import collate
from vlbert_fast.data.random import random_examples
from vlbert_fast.model import VLBertForPretraining
from vlbert_fast.model.flops import batch_training_flops, forward_flops, visual_flops
from vlbert_fast.model.visual_branch import VisualBranch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Many tiny convolutions: one thread is faster than two contending for the 2 shared cores of CI."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


BASE = VisualConfig(depth=18, width=4, pooled_size=5)  # RoIAlign native: no matmuls for the counter to see
IMAGES = torch.randn(2, 3, 37, 53)  # odd sizes: every stride rounds
BOXES = torch.tensor([[0, 0, 52, 36.0], [3, 4, 20, 30], [10, 10, 40, 30]])
OWNER = torch.tensor([0, 0, 1])


def counted(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"frozen_stages": 0, "res5_dilated": False},
        {"depth": 50, "stride_in_1x1": True, "frozen_stages": 1},
        {"depth": 50, "stride_in_1x1": False, "frozen_stages": 4},
        {"depth": 34, "frozen_stages": 3, "frozen_bn": False},
    ],
)
def test_branch_forward_and_training_flops(changes):
    cfg = dataclasses.replace(BASE, **changes)
    branch = VisualBranch(cfg)
    parts = visual_flops(cfg, 2, 37, 53, 3)
    assert counted(lambda: branch(IMAGES, BOXES, OWNER)) == parts["backbone"] + parts["roi_head"]
    assert counted(lambda: branch(IMAGES, BOXES, OWNER).sum().backward()) == parts["training"]
    assert parts["backbone"] > 0 and parts["roi_head"] > 0


def test_e2e_model_forward_flops():
    cfg = ModelConfig(
        vocab_size=97,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        visual_feature_dim=32,
        geometry_dim=16,
        num_roi_classes=5,
        visual=dataclasses.replace(BASE, mode="e2e"),
        packed=False,  # the padded reference: FlopCounterMode does not count CPU SDPA's varlen attention
    )
    examples = random_examples(cfg, 3, seed=4, text_len=(6, 6), num_regions=(2, 2), text_only=0.0, image_wh=(53, 37))
    for ex in examples:
        ex.region_features = None
        ex.image = torch.randn(3, 37, 53)
        ex.region_predict[1] = True
    batch = collate(examples)
    model = VLBertForPretraining(cfg).eval()
    masked = int((batch.mlm_labels != -100).sum())
    text = forward_flops(cfg, batch.seq_lens.tolist(), batch.num_regions, masked, int(batch.region_predict.sum()))
    visual = visual_flops(cfg.visual, 3, 37, 53, batch.num_regions)
    with torch.no_grad():
        assert counted(lambda: model(batch)) == sum(text.values()) + visual["backbone"] + visual["roi_head"]
    assert batch_training_flops(cfg, batch) == 3 * sum(text.values()) + visual["training"]
