"""VL-BERT's input embedding (DESIGN.md, "The model, exactly"), plain PyTorch: the reference the fused kernel
is tested against.

Legend: B samples, L tokens per row (padded), K regions in the batch, H hidden size.

Every token sums word + position + token type + a visual part, then LayerNorm (eps 1e-12) and dropout:
- TEXT (row with an image): word(id) + visual_ln_text(visual feature of its tagged region);
- TEXT_ONLY (text-only row): word(id) + text_visual_embedding (learned, zero at initialisation);
- ROI: object_word_embedding ([IMG]), or object_mask_word_embedding when the region is masked,
  + visual_ln_object(its own visual feature);
- END: end_embedding, no visual part.
Both visual LayerNorm gains start at `visual_scale_*_init` (0): at initialisation the image adds nothing and every
text token's embedding is exactly BERT's.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..data.batch import Batch, TokenKind


class VLBertEmbeddings(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h = cfg.hidden_size
        self.word_embeddings = nn.Embedding(cfg.vocab_size, h)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, h)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, h)
        self.visual_ln_text = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.visual_ln_object = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.object_word_embedding = nn.Parameter(torch.zeros(h))
        self.object_mask_word_embedding = nn.Parameter(torch.zeros(h))
        self.end_embedding = nn.Parameter(torch.zeros(h))
        self.text_visual_embedding = nn.Parameter(torch.zeros(h))
        self.layer_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, batch: Batch, region_visual_KH: torch.Tensor) -> torch.Tensor:  # [B, L, H]
        kind_BL = batch.token_kind
        word_BLH = self.word_embeddings(batch.input_ids)
        is_word = (kind_BL == TokenKind.TEXT) | (kind_BL == TokenKind.TEXT_ONLY) | (kind_BL == TokenKind.PAD)
        x_BLH = torch.where(is_word[..., None], word_BLH, torch.zeros_like(word_BLH))
        if region_visual_KH.shape[0]:
            index_BL = batch.visual_index.clamp(min=0)
            text_vis_BLH = self.visual_ln_text(region_visual_KH)[index_BL]
            object_vis_BLH = self.visual_ln_object(region_visual_KH)[index_BL]
            masked_BL = batch.region_masked[index_BL]
            object_word_BLH = torch.where(
                masked_BL[..., None], self.object_mask_word_embedding, self.object_word_embedding
            )
            x_BLH = x_BLH + torch.where((kind_BL == TokenKind.TEXT)[..., None], text_vis_BLH, 0.0)
            x_BLH = x_BLH + torch.where((kind_BL == TokenKind.ROI)[..., None], object_word_BLH + object_vis_BLH, 0.0)
        x_BLH = x_BLH + torch.where((kind_BL == TokenKind.TEXT_ONLY)[..., None], self.text_visual_embedding, 0.0)
        x_BLH = x_BLH + torch.where((kind_BL == TokenKind.END)[..., None], self.end_embedding, 0.0)
        x_BLH = x_BLH + self.position_embeddings(batch.position_ids) + self.token_type_embeddings(batch.token_type_ids)
        return self.dropout(self.layer_norm(x_BLH))
