"""Token streams and weights for the embedding op's tests: the packed layout of collate, with shapes chosen freely.

A sample (T, R) is `[text x T] [RoI x R] [END]`, R = 0 making a text-only row; `pad` PAD tokens follow the last
sample. Text tokens of an image row are tagged with a random region of their own sample (VCR-style), RoI tokens
with themselves; every third region is masked.
"""

from __future__ import annotations

import torch

from vlbert_fast.ops import EmbeddingWeights
from vlbert_fast.vocabulary import TokenKind


def token_stream(samples: list[tuple[int, int]], pad: int = 0, vocab: int = 29, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    kinds, words, positions, types, visual = [], [], [], [], []
    regions = 0
    for text, rois in samples:
        kinds += [TokenKind.TEXT if rois else TokenKind.TEXT_ONLY] * text + [TokenKind.ROI] * rois + [TokenKind.END]
        words += torch.randint(0, vocab, (text,), generator=g).tolist() + [0] * (rois + 1)
        positions += list(range(text)) + [text] * rois + [text + 1]
        split = int(torch.randint(0, text + 1, (), generator=g))
        types += [0] * split + [1] * (text - split) + [2] * (rois + 1)
        tags = (regions + torch.randint(0, max(rois, 1), (text,), generator=g)).tolist() if rois else [-1] * text
        visual += tags + list(range(regions, regions + rois)) + [-1]
        regions += rois
    kinds += [TokenKind.PAD] * pad
    words += torch.randint(0, vocab, (pad,), generator=g).tolist()
    positions += [0] * pad
    types += [0] * pad
    visual += [-1] * pad
    return {
        "word_ids": torch.tensor(words, dtype=torch.long),
        "position_ids": torch.tensor(positions, dtype=torch.long),
        "token_type_ids": torch.tensor(types, dtype=torch.long),
        "token_kind": torch.tensor([int(k) for k in kinds], dtype=torch.long),
        "visual_index": torch.tensor(visual, dtype=torch.long),
        "region_masked": torch.arange(regions) % 3 == 1,
    }


def random_weights(
    hidden: int, vocab: int = 29, positions: int = 48, dtype=torch.float32, seed: int = 1, requires_grad: bool = True
) -> EmbeddingWeights:
    """Every tensor random, LayerNorm gains around 1 and biases non-zero, so each gradient path carries signal."""
    g = torch.Generator().manual_seed(seed)

    def make(*shape, centre: float = 0.0, std: float = 1.0) -> torch.Tensor:
        t = (centre + std * torch.randn(*shape, generator=g)).to(dtype)
        return t.requires_grad_(requires_grad)

    return EmbeddingWeights(
        word=make(vocab, hidden),
        position=make(positions, hidden),
        token_type=make(3, hidden),
        object_word=make(hidden),
        object_mask_word=make(hidden),
        end=make(hidden),
        text_visual=make(hidden),
        visual_ln_text_weight=make(hidden, centre=1.0, std=0.3),
        visual_ln_text_bias=make(hidden, std=0.3),
        visual_ln_object_weight=make(hidden, centre=1.0, std=0.3),
        visual_ln_object_bias=make(hidden, std=0.3),
        ln_weight=make(hidden, centre=1.0, std=0.3),
        ln_bias=make(hidden, std=0.3),
    )


def random_visual(stream: dict, hidden: int, dtype=torch.float32, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = stream["region_masked"].shape[0]
    return (torch.randn(k, hidden, generator=g) * 2 + 0.5).to(dtype).requires_grad_(True)


def op_args(stream: dict, visual: torch.Tensor, weights: EmbeddingWeights) -> tuple:
    """Positional arguments of fused_embedding / fused_embedding_reference."""
    names = ("word_ids", "position_ids", "token_type_ids", "token_kind", "visual_index")
    return (*(stream[n] for n in names), visual, stream["region_masked"], weights)


def grad_inputs(visual: torch.Tensor, weights: EmbeddingWeights) -> dict[str, torch.Tensor]:
    """Every differentiable input, by name."""
    return {"visual": visual, **weights.tensors()}
