"""The sequence layout: positions, token types, kinds and visual indices, written out by hand per row."""

import torch

from vlbert_fast.data import IGNORE_INDEX, Example, TokenKind, collate

T, X, R, E, P = TokenKind.TEXT, TokenKind.TEXT_ONLY, TokenKind.ROI, TokenKind.END, TokenKind.PAD


def boxes(n, w=100.0, h=80.0):
    b = torch.tensor([[10.0, 10.0, 20.0, 30.0]]).repeat(n, 1)
    b[0] = torch.tensor([0.0, 0.0, w - 1, h - 1])
    return b


def test_layout_of_mixed_rows():
    image_row = Example(
        input_ids=torch.tensor([2, 10, 11, 3]),
        boxes=boxes(3),
        image_size=(100.0, 80.0),
        region_features=torch.ones(3, 5),
        mlm_labels=torch.tensor([-100, 10, -100, -100]),
    )
    text_only = Example(input_ids=torch.tensor([2, 12, 3]))
    whole_image_only = Example(
        input_ids=torch.tensor([2, 13, 3, 14, 3]),
        token_type_ids=torch.tensor([0, 0, 0, 1, 1]),
        boxes=boxes(1),
        image_size=(100.0, 80.0),
        region_features=torch.ones(1, 5),
    )
    b = collate([image_row, text_only, whole_image_only])
    # lengths: 4 + 3 + 1 = 8; 3 + 0 + 1 = 4; 5 + 1 + 1 = 7
    assert b.seq_lens.tolist() == [8, 4, 7]
    assert b.cu_seqlens.tolist() == [0, 8, 12, 19] and b.cu_seqlens.dtype == torch.int32
    assert b.token_kind.tolist() == [
        [T, T, T, T, R, R, R, E],
        [X, X, X, E, P, P, P, P],
        [T, T, T, T, T, R, E, P],
    ]
    assert b.position_ids[0].tolist() == [0, 1, 2, 3, 4, 4, 4, 5]
    assert b.position_ids[1, :4].tolist() == [0, 1, 2, 4]  # [END] at text length + 1 also without RoIs
    assert b.position_ids[2, :7].tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert b.token_type_ids[0].tolist() == [0, 0, 0, 0, 2, 2, 2, 2]
    assert b.token_type_ids[1, :4].tolist() == [0, 0, 0, 2]
    assert b.token_type_ids[2, :7].tolist() == [0, 0, 0, 1, 1, 2, 2]
    # regions 0-2 are row 0's, region 3 is row 2's whole image
    assert b.region_sample.tolist() == [0, 0, 0, 2]
    assert b.visual_index.tolist() == [
        [0, 0, 0, 0, 0, 1, 2, -1],
        [-1, -1, -1, -1, -1, -1, -1, -1],
        [3, 3, 3, 3, 3, 3, -1, -1],
    ]
    assert b.attention_mask.sum(1).tolist() == [8, 4, 7]
    assert b.mlm_labels[0].tolist() == [IGNORE_INDEX, 10] + [IGNORE_INDEX] * 6
    assert b.has_image.tolist() == [True, False, True]
    assert b.image_size.tolist() == [[100.0, 80.0], [1.0, 1.0], [100.0, 80.0]]
    assert b.region_masked.tolist() == [False] * 4 and b.region_features.shape == (4, 5)
    b.validate(vocab_size=20, max_positions=16, feature_dim=5)


def test_text_tagged_to_detections():
    """VCR-style: text tokens that refer to a box take that box's visual feature."""
    ex = Example(
        input_ids=torch.tensor([2, 5, 6, 3]),
        text_visual_index=torch.tensor([0, 2, 1, 0]),
        boxes=boxes(3),
        image_size=(100.0, 80.0),
        region_features=torch.ones(3, 5),
    )
    b = collate([Example(input_ids=torch.tensor([2, 3])), ex])
    assert b.visual_index[1, :4].tolist() == [0, 2, 1, 0]
    b.validate(vocab_size=20, max_positions=16, feature_dim=5)


def test_packed_stream_is_the_masked_rows():
    ex = [Example(input_ids=torch.arange(2, 2 + n)) for n in (5, 1, 3)]
    b = collate(ex)
    packed = b.input_ids[b.attention_mask]
    cu = b.cu_seqlens.tolist()
    for i, e in enumerate(ex):
        assert packed[cu[i] : cu[i + 1] - 1].tolist() == e.input_ids.tolist()
