"""Where generated data and derived facts are cached: `$VLBERT_FAST_CACHE`, by default ~/.cache/vlbert_fast."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    return Path(os.environ.get("VLBERT_FAST_CACHE", Path.home() / ".cache" / "vlbert_fast"))
