"""Data: readers of the real formats, the synthetic world, masking, collation into a `Batch`."""

from .batch import IGNORE_INDEX, Batch, InvalidBatchError, TokenKind
from .collate import Example, collate

__all__ = ["IGNORE_INDEX", "Batch", "Example", "InvalidBatchError", "TokenKind", "collate"]
