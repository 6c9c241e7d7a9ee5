"""The synthetic world: rendered scenes of coloured shapes, captions about them, region features from a
deterministic extractor, a text corpus and a WordPiece vocabulary, written in the real data formats."""

from .world import cached_world, generate

__all__ = ["cached_world", "generate"]
