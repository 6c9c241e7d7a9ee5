"""VL-BERT's input embedding (README.md, "The model, exactly"): the module that owns the parameters and calls the
`fused_embedding` op, whose plain-PyTorch reference (vlbert_fast/ops/embedding.py) is the one definition.

Legend: B samples, L tokens per row (padded), K regions in the batch, H hidden size.

Every token sums word + position + token type + a visual part, then LayerNorm (eps 1e-12) and dropout:
- TEXT (row with an image): word(id) + visual_ln_text(visual feature of its tagged region);
- TEXT_ONLY (text-only row): word(id) + visual_ln_text(text_visual_embedding), the original's
  `visual_ln_text(aux_text_visual_embedding)` with `aux` learned and initialised normal(0, 0.02)
  (pretrain/modules/resnet_vlbert_for_pretraining_multitask.py);
- ROI: object_word_embedding ([IMG]), or object_mask_word_embedding when the region is masked,
  + visual_ln_object(its own visual feature);
- END: end_embedding, no visual part.
Both visual LayerNorm gains start at `visual_scale_*_init`: the original's 0 means that at initialisation the image
adds nothing and every text token's embedding is exactly BERT's; the tiny default starts at 0.02.

Text-only tokens reach the op as TEXT tokens whose region is one extra visual row appended after the batch's K
regions, the aux vector itself: the op's per-token choice of `visual_ln_text` then gives exactly the original's
formula, and the op's own TEXT_ONLY term (`text_visual`) gets a zero row (no token of that kind reaches it).

The padded batch goes to the op as one flat stream of B*L tokens; `cfg.kernels` picks the op's backend. Dropout is
the op's seeded one: each training call draws its key on the device from that device's generator (no host sync),
so `torch.manual_seed` makes a run reproducible, and the reference and Triton backends draw the same mask.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..data.batch import Batch
from ..ops import EmbeddingWeights, fused_embedding
from ..vocabulary import TokenKind


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
        self.eps = cfg.layer_norm_eps
        self.dropout_p = cfg.hidden_dropout_prob
        self.backend = cfg.kernels

    def weights(self) -> EmbeddingWeights:
        """The op's tables; `text_visual` is a zero row: text-only tokens take their visual term as TEXT tokens of
        the appended aux row (module docstring)."""
        return EmbeddingWeights(
            word=self.word_embeddings.weight,
            position=self.position_embeddings.weight,
            token_type=self.token_type_embeddings.weight,
            object_word=self.object_word_embedding,
            object_mask_word=self.object_mask_word_embedding,
            end=self.end_embedding,
            text_visual=self.text_visual_embedding.detach().new_zeros(self.text_visual_embedding.shape),
            visual_ln_text_weight=self.visual_ln_text.weight,
            visual_ln_text_bias=self.visual_ln_text.bias,
            visual_ln_object_weight=self.visual_ln_object.weight,
            visual_ln_object_bias=self.visual_ln_object.bias,
            ln_weight=self.layer_norm.weight,
            ln_bias=self.layer_norm.bias,
        )

    def forward(
        self, batch: Batch, region_visual_KH: torch.Tensor, tokens_BL: torch.Tensor | None = None
    ) -> torch.Tensor:  # [B, L, H], or [N, H] for the tokens selected by tokens_BL
        """The padded batch's embedding; with `tokens_BL` (bool [B, L], the attention mask for the packed stream)
        only the selected tokens', in row-major order: the packed [N, H] stream, padding never computed."""
        dropout_p = self.dropout_p if self.training else 0.0
        stream = (lambda t: t.reshape(-1)) if tokens_BL is None else (lambda t: t[tokens_BL])  # noqa: E731
        kind_N, visual_index_N = stream(batch.token_kind), stream(batch.visual_index)
        # Text-only tokens: TEXT tokens of region K, the aux row (module docstring). Always appended, so no device
        # synchronisation asks whether the batch has text-only rows.
        k = region_visual_KH.shape[0]
        text_only_N = kind_N == int(TokenKind.TEXT_ONLY)
        kind_N = torch.where(text_only_N, int(TokenKind.TEXT), kind_N)
        visual_index_N = torch.where(text_only_N, k, visual_index_N)
        visual_RH = torch.cat([region_visual_KH, self.text_visual_embedding[None].to(region_visual_KH.dtype)])
        masked_R = torch.cat([batch.region_masked, batch.region_masked.new_zeros(1)])
        x_NH = fused_embedding(
            stream(batch.input_ids),
            stream(batch.position_ids),
            stream(batch.token_type_ids),
            kind_N,
            visual_index_N,
            visual_RH,
            masked_R,
            self.weights(),
            eps=self.eps,
            dropout_p=dropout_p,
            seed=None,  # a fresh key drawn on the device by the op
            backend=self.backend,
        )
        if region_visual_KH.shape[0] == 0:
            # No region in the batch (text-only rows): an exact zero that gives the visual parameters (and the region
            # encoder, through its empty output) a zero gradient, so every rank reduces the same gradients whatever
            # its batch holds (ZeRO-1/2 reduce them bucket by bucket, parameter by parameter).
            unused = (self.object_word_embedding, self.object_mask_word_embedding, *self.visual_ln_text.parameters())
            unused += (*self.visual_ln_object.parameters(),)
            x_NH = x_NH + 0.0 * (sum(p.sum() for p in unused) + region_visual_KH.sum())
        return x_NH if tokens_BL is not None else x_NH.view(*batch.input_ids.shape, -1)
