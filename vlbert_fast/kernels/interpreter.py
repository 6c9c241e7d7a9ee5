"""Whether Triton kernels run in its interpreter (TRITON_INTERPRET=1: NumPy on the CPU, for tests). Importing this
module does not import Triton, so the ops' dispatch can ask before deciding to."""

from __future__ import annotations

import os


def interpreter_on() -> bool:
    """TRITON_INTERPRET=1. Read by Triton when a kernel module is imported, so set it before importing any;
    tests/conftest.py does."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
