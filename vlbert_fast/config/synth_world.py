"""The synthetic world (`vlbert-fast synth`): sizes of the generated data set."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SynthConfig:
    seed: int = 0
    """Seed of the world: the same seed and sizes give byte-identical files."""

    train_images: int = 3000
    """Images (and captions) in the training split."""

    val_images: int = 300
    """Images (and captions) in the held-out split."""

    image_size: int = 64
    """Side of the square images in pixels."""

    max_objects: int = 2
    """Objects per image, drawn uniformly from 1..max_objects (at most 4: objects in one image have distinct
    shapes, so every colour or shape word in a caption names exactly one object). With more objects per image the
    model must bind words to regions, which takes the tiny model far more steps than the default run has."""

    corpus_lines: int = 2000
    """Lines of the text-only corpus."""

    feature_dim: int = 128
    """Width of the region features the deterministic extractor writes (model.visual_feature_dim must match)."""

    vocab_size: int = 1024
    """Size of the WordPiece vocabulary, padded with [unusedN] tokens to exactly this many."""

    def __post_init__(self) -> None:
        if self.train_images < 1 or self.val_images < 0:
            raise ValueError("train_images must be >= 1 and val_images >= 0")
        if self.image_size < 32:
            raise ValueError(f"image_size must be at least 32 pixels, found {self.image_size}")
        if not 1 <= self.max_objects <= 4:
            raise ValueError(f"max_objects must be in 1..4 (one object per shape), found {self.max_objects}")
        if self.feature_dim < 8 or self.vocab_size < 64:
            raise ValueError("feature_dim >= 8 and vocab_size >= 64 are required")
