"""VL-BERT's input embedding as one op over a flat token stream (README.md, "The model, exactly").

    fused_embedding(word_ids, position_ids, token_type_ids, token_kind, visual_index,   # [N] int each
                    visual, region_masked, weights,                                    # [K, H], [K] bool
                    eps=1e-12, dropout_p=0.0, seed=0, offset=0, deterministic=False,
                    backend="auto") -> [N, H]

The stream is any flat view of tokens: the padded batch flattened to [B*L] or a packed one. Per token n, with
kind = token_kind[n] (`TokenKind`) and r = visual_index[n] (an index into the K regions, -1 for none):

    sum[n] = position[position_ids[n]] + token_type[token_type_ids[n]]
             + word[word_ids[n]]                            if kind in (TEXT, TEXT_ONLY, PAD)
             + object_mask_word if region_masked[r] else object_word      if kind == ROI
             + end                                                        if kind == END
             + text_visual                                                if kind == TEXT_ONLY
             + LayerNorm_text(visual[r])                                  if kind == TEXT
             + LayerNorm_object(visual[r])                                if kind == ROI
    out[n] = Dropout(LayerNorm(sum[n]))

`visual` holds the regions' visual features (the RegionEncoder output), `weights` (`EmbeddingWeights`) the tables,
the four learned rows and the three LayerNorms' parameters. All LayerNorms use `eps`. Indices are not range-checked
here (that needs a GPU synchronisation; the model's `Batch.validate` does it): out-of-range ids are an error in the
reference and undefined in the kernel.

Precision: low-precision inputs are read as they are, everything is computed in fp32 (fp64 for fp64 tables,
reference only) and the result is rounded once to the word table's dtype. Gradients come back in each input's dtype.

Dropout (inverted, scale 1/(1-p)): element (n, h) is kept when `philox_uniform(seed, offset + n*H + h) >= p`, the
uniform draw of Triton's `tl.rand` (ops/dropout.py: the draws, where they are made, and the reproducibility
contract). Both backends draw exactly these numbers, so a seed gives the same mask on both. The counters must stay
below 2**31 (offset + N*H), seeds in [0, 2**63). `seed` is an int, a one-element int64 tensor on the tables' device,
or None: a fresh key drawn there by the device's generator (what the model passes, so `torch.manual_seed` governs it;
ops/library.py `dropout_seed`), never read on the host.

Backends: `triton` (kernels/embedding.py; `deterministic=True` trades speed for bitwise-reproducible table
gradients) and `reference` (plain PyTorch, the specification; its backward is autograd's), behind the custom op
`torch.ops.vlbert_fast.fused_embedding` (ops/library.py).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from ..vocabulary import TokenKind
from .dispatch import Backend, Op, interpreted, register, triton_reasons
from .dropout import (  # noqa: F401  (the Philox helpers lived here: ops/attention.py and tests import them from here)
    MAX_COUNTER,
    dropout_counters,
    philox_4x32,
    philox_uniform,
    philox_uniform_torch,
)
from .library import dropout_seed, require_key, unaliased, use_custom_op, vjp


@dataclass(frozen=True)
class EmbeddingWeights:
    """The learned tensors of the embedding; H the hidden size."""

    word: torch.Tensor
    """[V, H] word-piece table."""
    position: torch.Tensor
    """[P, H] position table."""
    token_type: torch.Tensor
    """[T, H] token-type table (sentence A, sentence B, visual)."""
    object_word: torch.Tensor
    """[H] the [IMG] word embedding of a RoI."""
    object_mask_word: torch.Tensor
    """[H] the word embedding of a masked RoI."""
    end: torch.Tensor
    """[H] the [END] token."""
    text_visual: torch.Tensor
    """[H] what a text-only row's token adds in place of a visual feature."""
    visual_ln_text_weight: torch.Tensor
    """[H] gain of the LayerNorm on text tokens' visual features."""
    visual_ln_text_bias: torch.Tensor
    """[H]"""
    visual_ln_object_weight: torch.Tensor
    """[H] gain of the LayerNorm on RoI tokens' visual features."""
    visual_ln_object_bias: torch.Tensor
    """[H]"""
    ln_weight: torch.Tensor
    """[H] gain of the output LayerNorm."""
    ln_bias: torch.Tensor
    """[H]"""

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# ---------------------------------------------------------------------------------------------------------------------
# the specification


def fused_embedding_reference(
    word_ids: torch.Tensor,  # [N] int
    position_ids: torch.Tensor,  # [N] int
    token_type_ids: torch.Tensor,  # [N] int
    token_kind: torch.Tensor,  # [N] int TokenKind
    visual_index: torch.Tensor,  # [N] int, -1 none
    visual: torch.Tensor,  # [K, H]
    region_masked: torch.Tensor,  # [K] bool
    weights: EmbeddingWeights,
    eps: float = 1e-12,
    dropout_p: float = 0.0,
    seed: int | torch.Tensor = 0,
    offset: int = 0,
    deterministic: bool = False,
) -> torch.Tensor:  # [N, H] in weights.word's dtype
    """Plain PyTorch, the specification (module docstring). `deterministic` is accepted for the common signature;
    the reference's backward is autograd's (torch.use_deterministic_algorithms governs it)."""
    w = weights
    compute = torch.float64 if w.word.dtype == torch.float64 else torch.float32
    hidden = w.word.shape[1]
    kind = token_kind
    is_word = (kind == TokenKind.TEXT) | (kind == TokenKind.TEXT_ONLY) | (kind == TokenKind.PAD)

    def rows(flag: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return torch.where(flag[:, None], values.to(compute), 0.0)

    x = F.embedding(position_ids, w.position).to(compute) + F.embedding(token_type_ids, w.token_type).to(compute)
    x = x + rows(is_word, F.embedding(word_ids, w.word))
    if visual.shape[0]:  # no region: no TEXT or ROI token either
        region = visual_index.clamp(min=0)
        object_word = torch.where(region_masked[region][:, None], w.object_mask_word, w.object_word)
        x = x + rows(kind == TokenKind.ROI, object_word)
    x = x + rows(kind == TokenKind.END, w.end.expand(kind.shape[0], hidden))
    x = x + rows(kind == TokenKind.TEXT_ONLY, w.text_visual.expand(kind.shape[0], hidden))
    if visual.shape[0]:
        v = visual.to(compute)
        for which, gain, bias in (
            (TokenKind.TEXT, w.visual_ln_text_weight, w.visual_ln_text_bias),
            (TokenKind.ROI, w.visual_ln_object_weight, w.visual_ln_object_bias),
        ):
            normed = F.layer_norm(v, (hidden,), gain.to(compute), bias.to(compute), eps)
            x = x + rows(kind == which, normed[region])
    y = F.layer_norm(x, (hidden,), w.ln_weight.to(compute), w.ln_bias.to(compute), eps)
    if dropout_p > 0:
        keep = philox_uniform(seed, dropout_counters(offset, kind.shape[0], hidden, kind.device)) >= dropout_p
        y = torch.where(keep, y * (1.0 / (1.0 - dropout_p)), 0.0)
    return y.to(w.word.dtype)


# ---------------------------------------------------------------------------------------------------------------------
# checks and backends

_INDEX_ARGS = ("word_ids", "position_ids", "token_type_ids", "token_kind", "visual_index")


def _check_inputs(word_ids, position_ids, token_type_ids, token_kind, visual_index, visual, region_masked, weights,
                  eps, dropout_p, seed, offset) -> None:  # fmt: skip
    index_args = dict(zip(_INDEX_ARGS, (word_ids, position_ids, token_type_ids, token_kind, visual_index), strict=True))
    for name, t in index_args.items():
        if t.dim() != 1 or t.shape != word_ids.shape:
            raise ValueError(f"{name}: expected shape [N] = {tuple(word_ids.shape)} (word_ids), found {tuple(t.shape)}")
        if t.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"{name}: expected int64 or int32, found {t.dtype}")
    if not isinstance(weights, EmbeddingWeights):
        raise TypeError(f"weights: expected EmbeddingWeights, found {type(weights).__name__}")
    hidden = weights.word.shape[-1]
    for name, t in weights.tensors().items():
        want = 2 if name in ("word", "position", "token_type") else 1
        if t.dim() != want or t.shape[-1] != hidden:
            shape = "[rows, H]" if want == 2 else "[H]"
            raise ValueError(f"weights.{name}: expected shape {shape} with H = {hidden}, found {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"weights.{name}: expected a floating dtype, found {t.dtype}")
    if visual.dim() != 2 or visual.shape[1] != hidden:
        raise ValueError(f"visual: expected shape [K, H] with H = {hidden}, found {tuple(visual.shape)}")
    if region_masked.shape != visual.shape[:1] or region_masked.dtype != torch.bool:
        raise ValueError(
            f"region_masked: expected a bool tensor of shape [K] = ({visual.shape[0]},), "
            f"found {region_masked.dtype} {tuple(region_masked.shape)}"
        )
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p: expected a probability in [0, 1), found {dropout_p}")
    if eps <= 0:
        raise ValueError(f"eps: expected a positive number, found {eps}")
    if dropout_p > 0 and not (0 <= offset and offset + word_ids.shape[0] * hidden <= MAX_COUNTER):
        raise ValueError(
            f"offset: dropout counters offset + N*H = {offset} + {word_ids.shape[0] * hidden} must lie in "
            f"[0, 2**31]; split the stream or lower the offset"
        )


def _all_tensors(args: tuple) -> dict[str, torch.Tensor]:
    word_ids, position_ids, token_type_ids, token_kind, visual_index, visual, region_masked, weights = args[:8]
    named = dict(zip(_INDEX_ARGS, (word_ids, position_ids, token_type_ids, token_kind, visual_index), strict=True))
    named.update(visual=visual, region_masked=region_masked)
    named.update({f"weights.{k}": v for k, v in weights.tensors().items()})
    return named


def _triton_reasons(*args, **kwargs) -> list[str]:
    reasons = triton_reasons(_all_tensors(args))
    hidden = args[7].word.shape[-1]
    if not reasons:
        from ..kernels.utils import MAX_FUSED_HIDDEN

        if hidden > MAX_FUSED_HIDDEN:
            reasons.append(f"hidden size {hidden} is above the fused kernel's maximum {MAX_FUSED_HIDDEN}")
    return reasons


def _triton_auto_skip(*args, **kwargs) -> list[str]:
    return interpreted(args[7].word.device)


def _stacked(weights: EmbeddingWeights) -> tuple[torch.Tensor, ...]:
    """The weights in kernels/embedding.py's Operands order: tables, the four special rows stacked, the visual
    LayerNorms stacked (text, object), the output LayerNorm."""
    w = weights
    special = torch.stack([w.object_word, w.object_mask_word, w.end, w.text_visual])
    visual_ln_w = torch.stack([w.visual_ln_text_weight, w.visual_ln_object_weight])
    visual_ln_b = torch.stack([w.visual_ln_text_bias, w.visual_ln_object_bias])
    return w.word, w.position, w.token_type, special, visual_ln_w, visual_ln_b, w.ln_weight, w.ln_bias


def _unstacked(word, position, token_type, special, visual_ln_w, visual_ln_b, ln_w, ln_b) -> EmbeddingWeights:
    return EmbeddingWeights(word, position, token_type, *special.unbind(0), visual_ln_w[0], visual_ln_b[0],
                            visual_ln_w[1], visual_ln_b[1], ln_w, ln_b)  # fmt: skip


def _run(backend: str):
    """A backend's differentiable entry: the custom op with that backend (the reference directly in eager mode)."""

    def run(word_ids, position_ids, token_type_ids, token_kind, visual_index, visual, region_masked, weights,
            eps=1e-12, dropout_p=0.0, seed=0, offset=0, deterministic=False) -> torch.Tensor:  # fmt: skip
        key = dropout_seed(seed, dropout_p, weights.word.device)
        if not use_custom_op(backend):
            return fused_embedding_reference(word_ids, position_ids, token_type_ids, token_kind, visual_index, visual,
                                             region_masked, weights, eps, dropout_p, key if key is not None else 0,
                                             offset, deterministic)  # fmt: skip
        return torch.ops.vlbert_fast.fused_embedding(
            word_ids, position_ids, token_type_ids, token_kind, visual_index, region_masked, visual,
            *_stacked(weights), float(eps), float(dropout_p), key, int(offset), bool(deterministic), backend,
        )  # fmt: skip

    return run


EMBEDDING = register(
    Op(
        "fused_embedding",
        [
            Backend("triton", _run("triton"), _triton_reasons, auto_skip=_triton_auto_skip),
            Backend("reference", _run("reference"), lambda *a, **k: []),
        ],
    )
)


# ---------------------------------------------------------------------------------------------------------------------
# the custom ops (ops/library.py): vlbert_fast::fused_embedding and its backward, over the tensors in kernels/
# embedding.py's Operands order


@torch.library.custom_op("vlbert_fast::fused_embedding", mutates_args=())
def _embedding_op(
    word_ids: torch.Tensor,
    position_ids: torch.Tensor,
    token_type_ids: torch.Tensor,
    token_kind: torch.Tensor,
    visual_index: torch.Tensor,
    region_masked: torch.Tensor,
    visual: torch.Tensor,
    word: torch.Tensor,
    position: torch.Tensor,
    token_type: torch.Tensor,
    special: torch.Tensor,
    visual_ln_w: torch.Tensor,
    visual_ln_b: torch.Tensor,
    ln_w: torch.Tensor,
    ln_b: torch.Tensor,
    eps: float,
    dropout_p: float,
    seed: torch.Tensor | None,
    offset: int,
    deterministic: bool,
    backend: str,
) -> torch.Tensor:
    key = require_key(seed, dropout_p)
    if backend == "triton":
        from ..kernels.embedding import Operands, fused_embedding_forward

        ops = Operands(word_ids, position_ids, token_type_ids, token_kind, visual_index, region_masked, visual, word,
                       position, token_type, special, visual_ln_w, visual_ln_b, ln_w, ln_b)  # fmt: skip
        return fused_embedding_forward(ops, eps, dropout_p, key, offset)
    weights = _unstacked(word, position, token_type, special, visual_ln_w, visual_ln_b, ln_w, ln_b)
    out = fused_embedding_reference(word_ids, position_ids, token_type_ids, token_kind, visual_index, visual,
                                    region_masked, weights, eps, dropout_p, key, offset, deterministic)  # fmt: skip
    return out.contiguous()


@_embedding_op.register_fake
def _(word_ids, position_ids, token_type_ids, token_kind, visual_index, region_masked, visual, word, *rest):
    return word.new_empty((word_ids.shape[0], word.shape[1]))


_WEIGHT_SLOTS = slice(6, 15)  # visual and the eight weight tensors: what the backward returns gradients for


@torch.library.custom_op("vlbert_fast::fused_embedding_backward", mutates_args=())
def _embedding_backward_op(
    grad_out: torch.Tensor,
    operands: list[torch.Tensor],  # the 15 tensors of the forward, in its order
    eps: float,
    dropout_p: float,
    seed: torch.Tensor | None,
    offset: int,
    deterministic: bool,
    backend: str,
) -> list[torch.Tensor]:  # gradients of operands[6:15]: visual, the tables, special rows, the LayerNorms
    key = require_key(seed, dropout_p)
    if backend == "triton":
        from ..kernels.embedding import Operands, fused_embedding_backward

        grads = fused_embedding_backward(grad_out, Operands(*operands), eps, dropout_p, key, offset, deterministic)
    else:
        indices, diff = operands[:6], operands[_WEIGHT_SLOTS]

        def forward(visual, *weights):
            ids, kind, visual_index, masked = indices[:3], indices[3], indices[4], indices[5]
            return fused_embedding_reference(*ids, kind, visual_index, visual, masked, _unstacked(*weights), eps,
                                             dropout_p, key, offset, deterministic)  # fmt: skip

        grads = vjp(forward, diff, grad_out)
    return list(unaliased([g.contiguous() for g in grads], [grad_out, *operands]))


@_embedding_backward_op.register_fake
def _(grad_out, operands, eps, dropout_p, seed, offset, deterministic, backend):
    return [t.new_empty(t.shape) for t in operands[_WEIGHT_SLOTS]]


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:15], inputs[17])
    ctx.args = (inputs[15], inputs[16], inputs[18], inputs[19], inputs[20])


def _backward(ctx, grad_out):
    *operands, seed = ctx.saved_tensors
    eps, dropout_p, offset, deterministic, backend = ctx.args
    grads = _embedding_backward_op(grad_out, operands, eps, dropout_p, seed, offset, deterministic, backend)
    return (None,) * 6 + tuple(grads) + (None,) * 6


_embedding_op.register_autograd(_backward, setup_context=_setup)


def fused_embedding(
    word_ids: torch.Tensor,  # [N] int
    position_ids: torch.Tensor,  # [N] int
    token_type_ids: torch.Tensor,  # [N] int
    token_kind: torch.Tensor,  # [N] int TokenKind
    visual_index: torch.Tensor,  # [N] int, -1 none
    visual: torch.Tensor,  # [K, H]
    region_masked: torch.Tensor,  # [K] bool
    weights: EmbeddingWeights,
    eps: float = 1e-12,
    dropout_p: float = 0.0,
    seed: int | torch.Tensor | None = 0,
    offset: int = 0,
    deterministic: bool = False,
    backend: str = "auto",
) -> torch.Tensor:  # [N, H]
    """The embedding of a flat token stream (module docstring); `backend` picks the implementation."""
    args = (word_ids, position_ids, token_type_ids, token_kind, visual_index, visual, region_masked, weights)
    _check_inputs(*args, eps, dropout_p, seed, offset)
    return EMBEDDING(*args, eps, dropout_p, seed, offset, deterministic, backend=backend)
