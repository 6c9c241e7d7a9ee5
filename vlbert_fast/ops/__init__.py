"""Public ops. Each has a plain-PyTorch `<op>_reference` (the specification) and a `backend=` argument
("auto" | "reference" | "triton" | "native", and op-specific ones such as "sdpa"); see dispatch.py. Each is also a
torch.library custom op, `torch.ops.vlbert_fast.<op>` with `<op>_backward` (library.py)."""

from .attention import (
    varlen_attention,
    varlen_attention_packed,
    varlen_attention_packed_reference,
    varlen_attention_reference,
)
from .cross_entropy import linear_cross_entropy, linear_cross_entropy_reference
from .dispatch import REGISTRY, BackendNotSupported
from .embedding import EmbeddingWeights, fused_embedding, fused_embedding_reference
from .gelu import bias_gelu, bias_gelu_reference
from .geometry import box_geometry_embedding, box_geometry_embedding_reference
from .layer_norm import bias_dropout_residual_layer_norm, bias_dropout_residual_layer_norm_reference
from .roi_align import roi_align, roi_align_reference

__all__ = [
    "REGISTRY",
    "BackendNotSupported",
    "EmbeddingWeights",
    "bias_dropout_residual_layer_norm",
    "bias_dropout_residual_layer_norm_reference",
    "bias_gelu",
    "bias_gelu_reference",
    "box_geometry_embedding",
    "box_geometry_embedding_reference",
    "fused_embedding",
    "fused_embedding_reference",
    "linear_cross_entropy",
    "linear_cross_entropy_reference",
    "roi_align",
    "roi_align_reference",
    "varlen_attention",
    "varlen_attention_packed",
    "varlen_attention_packed_reference",
    "varlen_attention_reference",
]
