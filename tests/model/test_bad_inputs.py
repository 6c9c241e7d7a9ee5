"""Bad input to the model raises InvalidBatchError naming the tensor and the problem, not an index error in torch."""

import pytest
import torch

from vlbert_fast.data import InvalidBatchError, collate
from vlbert_fast.data.random import random_examples
from vlbert_fast.model import VLBertForPretraining


@pytest.fixture
def model_and_batch(tiny_cfg):
    model = VLBertForPretraining(tiny_cfg)
    batch = collate(random_examples(tiny_cfg, 4, seed=5, text_only=0.0))
    return model, batch


def corrupt_ids(b, cfg):
    b.input_ids[0, 1] = cfg.vocab_size


def corrupt_box(b, cfg):
    b.boxes[1] = torch.tensor([50.0, 10.0, 20.0, 40.0])


def corrupt_features(b, cfg):
    b.region_features[2, 3] = float("nan")


def corrupt_type_length(b, cfg):
    b.token_type_ids = b.token_type_ids[:, :-1]


def corrupt_feature_rows(b, cfg):
    b.region_features = b.region_features[:-1]


def corrupt_feature_width(b, cfg):
    b.region_features = torch.zeros(b.num_regions, cfg.visual_feature_dim + 1)


def corrupt_visual_index(b, cfg):
    b.visual_index[0, 0] = b.num_regions + 3


def corrupt_positions(b, cfg):
    b.position_ids[0, 0] = cfg.max_position_embeddings


def corrupt_labels(b, cfg):
    b.mlm_labels[0, 0] = -7


def corrupt_image_size(b, cfg):
    b.image_size[1, 0] = 0.0


def corrupt_mask_gap(b, cfg):
    b.attention_mask[0, 1] = False


CASES = [
    (corrupt_ids, r"input_ids: id 211 at \(0, 1\) is outside the vocabulary \[0, 211\)"),
    (corrupt_box, r"boxes: region 1 has x2 < x1"),
    (corrupt_features, r"region_features: NaN or inf in region 2"),
    (corrupt_type_length, r"token_type_ids: shape .* does not match input_ids"),
    (corrupt_feature_rows, r"region_features: expected shape \[K, Dv\]"),
    (corrupt_feature_width, r"region_features: expected width 40"),
    (corrupt_visual_index, r"visual_index: .* at \(0, 0\)"),
    (corrupt_positions, r"position_ids: 64 at \(0, 0\) is outside"),
    (corrupt_labels, r"mlm_labels: -7 at \(0, 0\)"),
    (corrupt_image_size, r"image_size: every \(W, H\) must be positive"),
    (corrupt_mask_gap, r"attention_mask: row 0 has a gap"),
]


@pytest.mark.parametrize("corrupt,message", CASES, ids=[c.__name__ for c, _ in CASES])
def test_bad_input_raises_clear_error(model_and_batch, tiny_cfg, corrupt, message):
    model, batch = model_and_batch
    model(batch)  # the uncorrupted batch runs
    corrupt(batch, tiny_cfg)
    with pytest.raises(InvalidBatchError, match=message):
        model(batch)


def test_collate_rejects_mixed_presence_of_features(tiny_cfg):
    examples = random_examples(tiny_cfg, 3, seed=2, text_only=0.0)
    examples[1].region_features = None
    with pytest.raises(ValueError, match="region_features is given for some samples"):
        collate(examples)
