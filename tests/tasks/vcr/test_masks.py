"""Polygons -> 14 x 14 masks in the box's frame, against hand-drawn cases; the masks applied to the RoI grid."""

import pytest
import torch

from vlbert_fast.config import VisualConfig
from vlbert_fast.model.visual_branch import VisualBranch
from vlbert_fast.tasks.vcr import instance_masks, polygon_mask

BOX = [10, 20, 23, 33]  # 14 x 14 pixels: one mask cell per pixel


def test_a_polygon_filling_the_box_fills_the_mask():
    full = [[[10, 20], [24, 20], [24, 34], [10, 34]]]
    assert torch.equal(polygon_mask(full, BOX), torch.ones(14, 14))
    # the same on a box 3.5x larger: the frame scales with the box
    assert torch.equal(polygon_mask([[[0, 0], [49, 0], [49, 49], [0, 49]]], [0, 0, 48, 48]), torch.ones(14, 14))


def test_a_triangle_covers_the_cells_above_its_diagonal():
    mask = polygon_mask([[[10, 20], [24, 20], [10, 34]]], BOX)  # right angle at the top left
    rows, cols = torch.meshgrid(torch.arange(14), torch.arange(14), indexing="ij")
    assert bool((mask[rows + cols < 13] == 1).all())  # wholly inside
    assert bool((mask[rows + cols > 13] == 0).all())  # wholly outside
    assert bool((mask[rows + cols == 13] == 1).all())  # exactly half covered: at least half counts
    assert mask.sum() == 91 + 14


def test_a_polygon_outside_the_box_gives_an_empty_mask():
    assert polygon_mask([[[100, 200], [124, 200], [110, 234]]], BOX).sum() == 0
    assert polygon_mask([[[0, 0], [9, 0], [9, 40], [0, 40]]], BOX).sum() == 0  # touches the box's left edge only


def test_a_polygon_across_the_border_is_clipped_not_squashed():
    mask = polygon_mask([[[0, 0], [17, 0], [17, 100], [0, 100]]], BOX)  # covers columns x < 17: 7 of 14
    assert torch.equal(mask, torch.cat([torch.ones(14, 7), torch.zeros(14, 7)], dim=1))


def test_several_polygons_are_united_and_degenerate_ones_skipped():
    left = [[10, 20], [17, 20], [17, 34], [10, 34]]
    right = [[17, 20], [24, 20], [24, 34], [17, 34]]
    assert polygon_mask([left, right, [[0, 0], [5, 5]]], BOX).sum() == 196
    assert polygon_mask([], BOX).sum() == 0


def test_instance_masks_and_errors():
    masks = instance_masks([[[[10, 20], [24, 20], [24, 34], [10, 34]]], []], [BOX, BOX], size=7)
    assert masks.shape == (2, 7, 7) and masks[0].sum() == 49 and masks[1].sum() == 0
    assert instance_masks([], []).shape == (0, 14, 14)
    with pytest.raises(ValueError, match="2 polygon lists for 1 boxes"):
        instance_masks([[], []], [BOX])
    with pytest.raises(ValueError, match="x2 < x1"):
        polygon_mask([], [5, 0, 4, 3])


def test_masks_multiply_the_roi_grid_before_res5():
    torch.manual_seed(0)
    branch = VisualBranch(VisualConfig(depth=18, width=4, roi_align_backend="reference")).eval()
    images = torch.randn(1, 3, 64, 64)
    boxes = torch.tensor([[0.0, 0.0, 63.0, 63.0], [8.0, 8.0, 40.0, 50.0]])
    owner = torch.zeros(2, dtype=torch.long)
    masks = torch.stack([torch.ones(14, 14), polygon_mask([[[8, 8], [41, 8], [8, 51]]], boxes[1].tolist())])
    with torch.no_grad():
        pooled = branch.pool(branch.trunk(images), boxes, owner)
        want = branch.head(pooled * masks[:, None])
        assert torch.allclose(branch(images, boxes, owner, masks), want)
        assert torch.allclose(branch(images, boxes, owner, torch.ones(2, 14, 14)), branch(images, boxes, owner))
        assert not torch.allclose(want[1], branch.head(pooled)[1])
        with pytest.raises(ValueError, match=r"region_masks: expected shape \[K, 14, 14\]"):
            branch(images, boxes, owner, torch.ones(2, 7, 7))
