"""Where a config's file names point: relative to a data root unless absolute."""

from __future__ import annotations

from pathlib import Path


def under(root: Path, name: str) -> Path:
    """`name` as given when absolute, else inside `root` (the data root a config's relative names are read from)."""
    path = Path(name)
    return path if path.is_absolute() else root / path
