"""VL-BERT, plain PyTorch (the reference model). Legend: B samples, L tokens per row, K regions, H hidden,
M positions with a target.

VLBertModel: region features -> embeddings -> post-LN encoder -> hidden states [B, L, H].
VLBertForPretraining adds the MLM head (tied to the word embeddings) and the masked-RoI classification head, run
only on the positions that have targets, and the original's loss: MLM cross-entropy averaged over the masked words
of image-text rows, plus the same over text-only rows, plus soft cross-entropy averaged over the predicted regions,
plus (with `relationship_head`) the sentence-image relationship cross-entropy averaged over the labelled rows. With
`with_pooler` (or the relationship head) it holds BERT's pooler under the name `pooler.dense`.

Packed mode (`cfg.packed`, N tokens in the batch): the tokens are flattened with `x[attention_mask]` (row-major,
so the samples lie one after another as `Batch.cu_seqlens` says), embedded as that stream, run through the encoder's
packed path and the heads' fused pieces; the MLM loss is the chunked fused linear + cross-entropy, so neither
padding nor the [M, V] logits are ever computed in training (`mlm_logits` is filled in eval mode only). With dropout
off it computes what the padded reference computes (tests/model/test_packed*).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..data.batch import Batch
from ..vocabulary import IGNORE_INDEX, TokenKind
from .embeddings import VLBertEmbeddings
from .encoder import Encoder, EncoderLayer
from .heads import MLMHead, Pooler, RoIClassificationHead, soft_cross_entropy
from .region_encoder import RegionEncoder
from .visual_branch import VisualBranch

ZERO3_LEAF_MODULES: tuple[type[nn.Module], ...] = (VLBertEmbeddings, EncoderLayer, MLMHead, RoIClassificationHead)
"""Modules whose forward hands their children's parameters to fused ops directly (the embeddings, a packed encoder
layer, the heads): DeepSpeed ZeRO-3 must gather each one's parameters as a whole when it runs
(`deepspeed.utils.set_z3_leaf_modules`), as its hooks on the children never fire."""


def init_weights(module: nn.Module, std: float) -> None:
    """BERT's initialisation: normal(0, std) weights and embeddings, zero biases, LayerNorm 1 and 0."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class VLBertModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.region_encoder = RegionEncoder(cfg)
        self.visual = VisualBranch(cfg.visual) if cfg.visual.end_to_end else None
        """End to end: the ResNet that computes the appearance from the pixels (None with precomputed features)."""
        self.embeddings = VLBertEmbeddings(cfg)
        self.encoder = Encoder(cfg)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        cfg = self.cfg
        self.apply(lambda m: init_weights(m, cfg.initializer_range))
        emb = self.embeddings
        for p in (emb.object_word_embedding, emb.object_mask_word_embedding, emb.end_embedding):
            nn.init.normal_(p, mean=0.0, std=cfg.initializer_range)
        # The original's aux_text_visual_embedding: normal(0, initializer_range); it passes through visual_ln_text,
        # whose zero gain (the paper configs) keeps text-only rows exactly BERT's at initialisation.
        nn.init.normal_(emb.text_visual_embedding, mean=0.0, std=cfg.initializer_range)
        # Zero at initialisation (the original's object_mask_visual_embedding): a masked region shows nothing.
        nn.init.zeros_(self.region_encoder.mask_appearance)
        nn.init.constant_(emb.visual_ln_text.weight, cfg.visual_scale_text_init)
        nn.init.constant_(emb.visual_ln_object.weight, cfg.visual_scale_object_init)
        # The original leaves the 4096 -> H projection at PyTorch's default initialisation.
        self.region_encoder.projection.reset_parameters()

    def region_features(self, batch: Batch) -> torch.Tensor:  # [K, H]
        if batch.num_regions == 0:
            # A batch of text-only rows: the visual path still runs, on no region, so that every rank calls the same
            # modules whatever its batch holds (DeepSpeed ZeRO-3 gathers parameters in module hooks) and every
            # parameter gets a gradient (an exact zero; ZeRO-1/2 reduce them all).
            dtype = self.embeddings.word_embeddings.weight.dtype
            # The same calls as with regions: e2e passes no mask to the region encoder, precomputed mode does.
            masked_K = None
            if self.visual is not None:  # no image: an empty batch through the ResNet (64 px: any size would do)
                no_images = batch.boxes.new_zeros(0, 3, 64, 64, dtype=dtype)
                appearance_KD = self.visual(no_images, batch.boxes, batch.region_sample, None)
            else:
                appearance_KD = batch.boxes.new_zeros(0, self.cfg.visual_feature_dim, dtype=dtype)
                masked_K = batch.boxes.new_zeros(0, dtype=torch.bool)
            return self.region_encoder(appearance_KD, batch.boxes, batch.image_size[batch.region_sample], masked_K)
        if self.visual is not None:
            if batch.images is None:
                raise ValueError("model.visual.mode is e2e but the batch has no images (the dataset must load them)")
            # A masked region's pixels were zeroed in the image before it got here (data/images.py), so every
            # region's appearance comes from the backbone and none is replaced by the learned mask vector.
            appearance_KD = self.visual(batch.images, batch.boxes, batch.region_image, batch.region_masks)
            return self.region_encoder(appearance_KD, batch.boxes, batch.image_size[batch.region_sample], None)
        if batch.region_features is None:
            raise ValueError("batch has regions but no region_features (precomputed mode needs appearance features)")
        return self.region_encoder(
            batch.region_features,
            batch.boxes,
            batch.image_size[batch.region_sample],
            batch.region_masked,
        )

    def forward(self, batch: Batch, packed_output: bool = False) -> torch.Tensor | PackedHidden:  # [B, L, H]
        """Hidden states in the padded layout. In packed mode the padding positions hold zeros (nothing is computed
        there); the padded reference fills them with values that nothing reads. With `packed_output` (packed mode
        only) the `PackedHidden` stream itself, still through the module call (DeepSpeed ZeRO-3 hooks)."""
        if self.cfg.packed:
            packed = self.forward_packed(batch)
            return packed if packed_output else packed.padded()
        if packed_output:
            raise ValueError("packed_output=True needs model.packed=true")
        self.validate(batch)
        embedded_BLH = self.embeddings(batch, self.region_features(batch))
        return self.encoder(embedded_BLH, batch.attention_mask)

    def validate(self, batch: Batch) -> None:
        if self.cfg.check_inputs:
            batch.validate(
                vocab_size=self.cfg.vocab_size,
                max_positions=self.cfg.max_position_embeddings,
                type_vocab_size=self.cfg.type_vocab_size,
                feature_dim=self.cfg.visual_feature_dim,
                num_classes=self.cfg.num_roi_classes,
            )

    def forward_packed(self, batch: Batch) -> PackedHidden:
        """The encoder on the packed stream of the batch's tokens (module docstring)."""
        self.validate(batch)
        tokens_BL = batch.attention_mask
        embedded_NH = self.embeddings(batch, self.region_features(batch), tokens_BL=tokens_BL)
        # Valid by construction: the rows of attention_mask are prefixes (Batch.validate), so cu_seqlens starts at 0,
        # never decreases and ends at N; L bounds every sample and costs no device synchronisation.
        cu_seqlens, max_seqlen = batch.cu_seqlens, tokens_BL.shape[1]
        hidden_NH = self.encoder.forward_packed(embedded_NH, cu_seqlens, max_seqlen)
        return PackedHidden(hidden_NH, tokens_BL, cu_seqlens, max_seqlen)


class PackedHidden(NamedTuple):
    """The encoder's output on the packed stream (a named tuple: DeepSpeed's module hooks find the tensors)."""

    hidden: torch.Tensor
    """[N, H] hidden states of the batch's tokens, sample after sample (row-major order of the padded batch)."""
    tokens: torch.Tensor
    """[B, L] bool: where each packed token sits in the padded layout (the attention mask)."""
    cu_seqlens: torch.Tensor
    """[B+1] int32 boundaries of the samples in the stream."""
    max_seqlen: int
    """An upper bound of the sample lengths (the padded width L)."""

    def padded(self) -> torch.Tensor:  # [B, L, H], zeros at the padding
        out_BLH = self.hidden.new_zeros(*self.tokens.shape, self.hidden.shape[-1])
        return out_BLH.index_put((self.tokens,), self.hidden)


@dataclass
class PretrainOutput:
    loss: torch.Tensor
    """Sum of the parts present in the batch (a zero that still has a graph when none is)."""
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    """Each part: mlm_image (image-text rows), mlm_text (text-only rows), roi (masked-RoI classification)."""
    mlm_logits: torch.Tensor | None = None
    """[M, V] logits at the masked text positions, in row-major order."""
    mlm_labels: torch.Tensor | None = None
    """[M] their targets."""
    mlm_has_image: torch.Tensor | None = None
    """[M] bool: the position belongs to an image-text row."""
    roi_logits: torch.Tensor | None = None
    """[P, C] logits of the predicted regions, in region order."""
    relationship_logits: torch.Tensor | None = None
    """[S, 2] sentence-image relationship logits of the rows with a label, in row order (relationship_head)."""


class VLBertForPretraining(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.vlbert = VLBertModel(cfg)
        self.mlm_head = MLMHead(cfg)
        self.roi_head = RoIClassificationHead(cfg)
        for head in (self.mlm_head, self.roi_head):
            head.apply(lambda m: init_weights(m, cfg.initializer_range))
        # Built only when asked, so the default model's parameters and their random draws stay what they were.
        self.pooler = Pooler(cfg) if cfg.with_pooler or cfg.relationship_head else None
        self.relationship_head = nn.Linear(cfg.hidden_size, 2) if cfg.relationship_head else None
        for head in (self.pooler, self.relationship_head):
            if head is not None:
                head.apply(lambda m: init_weights(m, cfg.initializer_range))
        if self.pooler is not None and self.relationship_head is None:
            self.pooler.requires_grad_(False)  # carried from BERT to the fine-tuning tasks; nothing here trains it

    def forward(self, batch: Batch) -> PretrainOutput:
        """Every head runs once, through its module call, on the rows that have targets (possibly none), whatever
        the batch holds: the same modules in the same order on every rank (DeepSpeed ZeRO-3 gathers parameters in
        module hooks), and the heads' `anchor` zeros give every parameter a gradient (ZeRO-1/2 reduce them all)."""
        if self.cfg.packed:
            return self.forward_packed(batch)
        hidden_BLH = self.vlbert(batch)
        masked_BL = self._mlm_labels(batch) != IGNORE_INDEX
        labels_M = self._mlm_labels(batch)[masked_BL]
        has_image_M = (batch.token_kind == TokenKind.TEXT)[masked_BL]
        logits_MV = self.mlm_head(hidden_BLH[masked_BL], self.vlbert.embeddings.word_embeddings.weight)
        out = PretrainOutput(loss=logits_MV[:0].sum(), mlm_logits=logits_MV, mlm_labels=labels_M)
        out.mlm_has_image = has_image_M
        for name, rows in (("mlm_image", has_image_M), ("mlm_text", ~has_image_M)):
            if bool(rows.any()):
                out.losses[name] = F.cross_entropy(logits_MV[rows].float(), labels_M[rows])
        # The token of region k: the ROI position whose visual_index is k.
        roi_tokens_BL = self._predicted_roi_tokens(batch, batch.token_kind, batch.visual_index)
        order = torch.argsort(batch.visual_index[roi_tokens_BL])
        self._relationship_loss(out, batch, hidden_BLH[:, 0])
        self._roi_loss(out, batch, hidden_BLH[roi_tokens_BL][order], fused=False)
        return out

    @staticmethod
    def _mlm_labels(batch: Batch) -> torch.Tensor:  # [B, L]: IGNORE_INDEX everywhere when the batch has none
        if batch.mlm_labels is not None:
            return batch.mlm_labels
        return torch.full_like(batch.input_ids, IGNORE_INDEX)

    @staticmethod
    def _region_predict(batch: Batch) -> torch.Tensor:  # [K] bool: regions with a class target
        if batch.region_predict is not None and batch.roi_targets is not None:
            return batch.region_predict
        return torch.zeros(batch.num_regions, dtype=torch.bool, device=batch.boxes.device)

    def _predicted_roi_tokens(self, batch: Batch, kind: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """bool, shaped as `kind`: the RoI tokens whose region (`region`, an index into the K regions, -1 for none)
        has a class target. A batch without regions (text-only rows only) has none."""
        if batch.num_regions == 0:
            return torch.zeros_like(kind, dtype=torch.bool)
        return (kind == int(TokenKind.ROI)) & self._region_predict(batch)[region.clamp(min=0)]

    def _relationship_loss(self, out: PretrainOutput, batch: Batch, first_BH: torch.Tensor) -> None:
        """The relationship head on the pooled first token of the rows with a label (none: an exact 0 in the loss
        that still reaches every parameter of the pooler and the head)."""
        if self.relationship_head is None:
            return
        labels_B = batch.relationship_labels
        if labels_B is None:
            labels_B = torch.full((batch.num_samples,), IGNORE_INDEX, dtype=torch.long, device=first_BH.device)
        rows_B = labels_B != IGNORE_INDEX
        logits_S2 = self.relationship_head(self.pooler(first_BH[rows_B]))
        out.relationship_logits = logits_S2
        out.loss = out.loss + logits_S2[:0].sum()
        if logits_S2.shape[0]:
            out.losses["relationship"] = F.cross_entropy(logits_S2.float(), labels_B[rows_B])

    def _roi_loss(self, out: PretrainOutput, batch: Batch, hidden_PH: torch.Tensor, fused: bool) -> None:
        """The masked-RoI classification of the P predicted regions (in region order), and the total loss."""
        out.roi_logits = self.roi_head(hidden_PH, fused=fused)
        out.loss = out.loss + out.roi_logits[:0].sum()
        if out.roi_logits.shape[0]:
            out.losses["roi"] = soft_cross_entropy(out.roi_logits, batch.roi_targets[batch.region_predict])
        if out.losses:
            out.loss = out.loss + torch.stack(list(out.losses.values())).sum()

    def forward_packed(self, batch: Batch) -> PretrainOutput:
        """The same losses from the packed stream, with the fused heads (module docstring)."""
        packed = self.vlbert(batch, packed_output=True)
        hidden_NH, tokens_BL = packed.hidden, packed.tokens
        kind_N = batch.token_kind[tokens_BL]
        labels_N = self._mlm_labels(batch)[tokens_BL]
        masked_N = labels_N != IGNORE_INDEX
        labels_M = labels_N[masked_N]
        has_image_M = (kind_N == int(TokenKind.TEXT))[masked_N]
        groups = {"mlm_image": has_image_M, "mlm_text": ~has_image_M}
        words_VH = self.vlbert.embeddings.word_embeddings.weight
        mlm = self.mlm_head(hidden_NH[masked_N], words_VH, labels_M, groups, return_logits=not self.training)
        present = {name: bool(rows_M.any()) for name, rows_M in groups.items()}
        # The zeros of empty groups join the anchor: in the loss's graph (their backward hooks fire on every rank),
        # not in what is reported.
        anchor = sum((loss for name, loss in mlm.losses.items() if not present[name]), mlm.anchor)
        losses = {name: loss for name, loss in mlm.losses.items() if present[name]}
        out = PretrainOutput(loss=anchor, losses=losses, mlm_logits=mlm.logits, mlm_labels=labels_M)
        out.mlm_has_image = has_image_M
        region_N = batch.visual_index[tokens_BL]
        roi_tokens_N = self._predicted_roi_tokens(batch, kind_N, region_N)
        order = torch.argsort(region_N[roi_tokens_N])
        self._relationship_loss(out, batch, hidden_NH[packed.cu_seqlens[:-1].long()])
        self._roi_loss(out, batch, hidden_NH[roi_tokens_N][order], fused=True)
        return out
