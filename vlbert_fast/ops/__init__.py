"""Public ops. Each has a plain-PyTorch `<op>_reference` (the specification) and a `backend=` argument
("auto" | "reference" | "triton" | "native"); see dispatch.py."""

from .dispatch import REGISTRY, BackendNotSupported
from .embedding import EmbeddingWeights, fused_embedding, fused_embedding_reference
from .geometry import box_geometry_embedding, box_geometry_embedding_reference
from .roi_align import roi_align, roi_align_reference

__all__ = [
    "REGISTRY",
    "BackendNotSupported",
    "EmbeddingWeights",
    "box_geometry_embedding",
    "box_geometry_embedding_reference",
    "fused_embedding",
    "fused_embedding_reference",
    "roi_align",
    "roi_align_reference",
]
