"""The end-to-end visual branch: ResNet C4 + RoIAlign + res5 head. Frozen parts really receive no update, pixel
zeroing removes a masked region's content from every region's features, the architecture is the configured one."""

import dataclasses

import numpy as np
import pytest
import torch

from vlbert_fast.config import ModelConfig, TrainConfig, VisualConfig
from vlbert_fast.data.images import zero_regions
from vlbert_fast.engine.optim import build_optimizer
from vlbert_fast.model.backbone import Bottleneck, FrozenBatchNorm2d
from vlbert_fast.model.visual_branch import VisualBranch
from vlbert_fast.ops import roi_align_reference


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Many tiny convolutions: one thread is faster than two contending for the 2 shared cores of CI."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = VisualConfig(depth=18, width=4, roi_align_backend="reference")


def boxes_and_owners():
    boxes = torch.tensor([[0, 0, 79, 63.0], [5, 6, 40, 30], [30, 20, 70, 60], [0, 0, 79, 63], [10, 40, 33, 62]])
    return boxes, torch.tensor([0, 0, 0, 1, 1])


def test_shapes_stride_and_widths():
    for depth, out in ((18, 32), (50, 128)):
        branch = VisualBranch(dataclasses.replace(TINY, depth=depth))
        assert branch.out_channels == out
        assert branch.trunk(torch.randn(2, 3, 64, 80)).shape == (2, out // 2, 4, 5)  # res4 at stride 16
        boxes, owner = boxes_and_owners()
        assert branch(torch.randn(2, 3, 64, 80), boxes, owner).shape == (5, out)


def test_res5_dilated_keeps_the_pooled_size_and_stride_in_1x1_moves_the_stride():
    dilated = VisualBranch(dataclasses.replace(TINY, depth=50))
    assert dilated.layer4(torch.randn(1, 64, 14, 14)).shape[-2:] == (14, 14)
    assert all(m.dilation == (2, 2) for b in dilated.layer4 for m in (b.conv2,))
    plain = VisualBranch(dataclasses.replace(TINY, depth=50, res5_dilated=False))
    assert plain.layer4(torch.randn(1, 64, 14, 14)).shape[-2:] == (7, 7)
    caffe = VisualBranch(dataclasses.replace(TINY, depth=50, stride_in_1x1=True)).layer2[0]
    torchvision = VisualBranch(dataclasses.replace(TINY, depth=50, stride_in_1x1=False)).layer2[0]
    assert isinstance(caffe, Bottleneck)
    assert (caffe.conv1.stride, caffe.conv2.stride) == ((2, 2), (1, 1))
    assert (torchvision.conv1.stride, torchvision.conv2.stride) == ((1, 1), (2, 2))


def test_forward_is_roi_align_of_res4_then_res5_and_the_mean():
    branch = VisualBranch(TINY).eval()
    images = torch.randn(2, 3, 64, 80)
    boxes, owner = boxes_and_owners()
    fmap = branch.trunk(images)
    rois = torch.cat([owner[:, None].float(), boxes], 1)
    pooled = roi_align_reference(fmap, rois, (14, 14), 1 / 16, 1, aligned=False)
    expected = branch.layer4(pooled).mean(dim=(2, 3))
    torch.testing.assert_close(branch(images, boxes, owner), expected)


@pytest.mark.parametrize("frozen_bn", [True, False])
def test_frozen_parts_receive_no_update(frozen_bn):
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, frozen_stages=2, frozen_bn=frozen_bn)
    branch = VisualBranch(cfg)
    with torch.no_grad():  # non-trivial statistics, so an update would show
        for m in branch.modules():
            if isinstance(m, (FrozenBatchNorm2d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    before = {k: v.clone() for k, v in branch.state_dict().items()}
    optimizer = build_optimizer(branch, TrainConfig(lr=1e-2, weight_decay=0.1))
    branch.train()
    boxes, owner = boxes_and_owners()
    for _ in range(2):
        branch(torch.randn(2, 3, 64, 80), boxes, owner).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    after = branch.state_dict()
    frozen = ("conv1.", "bn1.", "layer1.")
    for name, value in after.items():
        stat = name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")
        is_norm = name.startswith("bn1.") or ".bn" in name or "downsample.1." in name
        if name.startswith(frozen) or (frozen_bn and is_norm):
            assert torch.equal(value, before[name]), f"{name} changed"
        elif name.endswith("weight") and not stat and ("conv" in name or "downsample.0" in name):
            assert not torch.equal(value, before[name]), f"{name} did not train"
    for name, p in branch.named_parameters():
        assert p.requires_grad == (not name.startswith(frozen)), name
    if not frozen_bn:  # the trainable stages' BatchNorms do learn their statistics
        assert not torch.equal(after["layer2.0.bn1.running_mean"], before["layer2.0.bn1.running_mean"])
    assert all(isinstance(m, FrozenBatchNorm2d) for m in (branch.bn1, branch.layer1[0].bn1, branch.layer1[1].bn2))


def test_frozen_stages_build_no_graph():
    branch = VisualBranch(dataclasses.replace(TINY, frozen_stages=4))
    fmap = branch.trunk(torch.randn(1, 3, 64, 64))
    assert not fmap.requires_grad  # conv1 ... res4 frozen: no autograd graph, no activations kept
    assert sum(p.numel() for p in branch.parameters() if p.requires_grad) == sum(
        p.numel() for p in branch.layer4.parameters()
    )


def test_pixel_zeroing_removes_the_masked_region_from_every_region():
    torch.manual_seed(0)
    branch = VisualBranch(TINY).eval()
    boxes, owner = boxes_and_owners()
    masked = np.array([False, True, False, False, False])  # region 1 of image 0, overlapped by regions 0 and 2
    base = torch.randn(2, 3, 64, 80)
    other = base.clone()
    other[0, :, 6:31, 5:41] = torch.randn(3, 25, 36) * 5  # different content inside region 1 only
    plain = [branch(img, boxes, owner) for img in (base, other)]
    assert not torch.allclose(plain[0][0], plain[1][0])  # unmasked, region 1's content shows in the whole image
    assert not torch.allclose(plain[0][2], plain[1][2])  # ... and in the overlapping region 2
    hidden = []
    for img in (base.clone(), other.clone()):
        zero_regions(img[0], boxes[owner == 0].numpy(), masked[:3])
        hidden.append(branch(img, boxes, owner))
    assert torch.equal(hidden[0], hidden[1])  # nothing of region 1's pixels reaches any region


def test_feature_width_must_match_the_resnet():
    with pytest.raises(ValueError, match="set model.visual_feature_dim=32"):
        ModelConfig(visual_feature_dim=40, visual=dataclasses.replace(TINY, mode="e2e"))
    with pytest.raises(ValueError, match="depth must be one of"):
        VisualConfig(depth=20)
    with pytest.raises(ValueError, match="frozen_stages"):
        VisualConfig(frozen_stages=5)
