"""IoU, the per-RoI labels and the accuracy criterion against hand-computed values, edge cases first."""

import numpy as np
import pytest

from vlbert_fast.tasks.refcoco import box_iou, clip_boxes, is_hit, region_labels
from vlbert_fast.tasks.refcoco.refer import parse_instances


@pytest.mark.parametrize(
    ("a", "b", "iou"),
    [
        ([0, 0, 4, 4], [0, 0, 4, 4], 1.0),  # identical
        ([0, 0, 2, 2], [2, 0, 4, 2], 0.0),  # touching along an edge
        ([0, 0, 2, 2], [2, 2, 4, 4], 0.0),  # touching at a corner
        ([0, 0, 2, 2], [5, 5, 6, 6], 0.0),  # apart
        ([0, 0, 4, 4], [1, 1, 3, 3], 4 / 16),  # containment: inner area / outer area
        ([0, 0, 2, 2], [1, 0, 3, 2], 2 / 6),  # half shifted: intersection 2, union 4 + 4 - 2
        ([0, 0, 3, 1], [1, 0, 4, 1], 2 / 4),  # exactly 0.5
        ([2, 2, 2, 2], [2, 2, 2, 2], 0.0),  # identical points: no area, never a localisation
        ([0, 0, 0, 4], [0, 0, 4, 4], 0.0),  # a line inside a box
        ([10.5, 0, 12.5, 1], [11.5, 0, 13.5, 1], 1 / 3),  # fractional coordinates
    ],
)
def test_iou_hand_values(a, b, iou):
    assert box_iou(np.array(a), np.array(b))[0, 0] == pytest.approx(iou, abs=1e-12)
    assert box_iou(np.array(b), np.array(a))[0, 0] == pytest.approx(iou, abs=1e-12)  # symmetric


def test_iou_matrix_shape_and_empty():
    a = np.array([[0, 0, 2, 2], [1, 1, 3, 3], [0, 0, 4, 4]], dtype=np.float32)
    out = box_iou(a, a[:2])
    assert out.shape == (3, 2)
    assert out[1, 0] == pytest.approx(1 / 7) and out[2, 1] == pytest.approx(4 / 16)
    assert box_iou(np.zeros((0, 4)), a).shape == (0, 3)


def test_labels_are_strictly_above_half_and_hits_at_least_half():
    target = np.array([0, 0, 3, 1], dtype=np.float32)
    rois = np.array([[0, 0, 3, 1], [1, 0, 4, 1], [0, 0, 2, 1], [0, 0, 2.1, 1]], dtype=np.float32)
    # IoU 1, exactly 0.5, 2/3, 0.7
    np.testing.assert_array_equal(region_labels(rois, target), [1, 0, 1, 1])
    assert is_hit(rois[1], target)  # 0.5 counts as correct (>=), though it is no positive label (>)
    assert not is_hit(np.array([1.01, 0, 4, 1]), target)


def test_coco_conversion_then_iou():
    inst = parse_instances(
        {
            "images": [{"id": 1, "width": 50, "height": 50}],
            "annotations": [{"id": 7, "image_id": 1, "bbox": [10, 20, 5, 4], "category_id": 1}],
        },
        "instances.json",
    )
    box = np.array(inst.annotations[7].box)
    np.testing.assert_array_equal(box, [10, 20, 15, 24])
    assert box_iou(box, np.array([10, 20, 15, 22]))[0, 0] == pytest.approx(0.5)  # half the height


def test_clip_to_the_image_as_pretraining_clips():
    np.testing.assert_array_equal(
        clip_boxes(np.array([[-3, 5, 120, 90]]), 100, 80), np.array([[0, 5, 99, 79]], dtype=np.float32)
    )
