"""Loads the compiled extension vlbert_fast._C (csrc/), or JIT-builds its C++ part when it was not built.

Order: the module built by setup.py (`pip install -e .` puts it next to this file); else, once per process and with
one warning, `torch.utils.cpp_extension.load` compiles the C++ sources into TORCH_EXTENSIONS_DIR (about half a
minute the first time, cached after); else the native backend is unavailable and `unavailable_reason()` says why.
Never raises: ops report the reason through their capability checks. `VLBERT_FAST_NO_JIT=1` disables the JIT build.
"""

from __future__ import annotations

import importlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch  # noqa: F401  (the extension links against torch's libraries: import torch first)

CSRC = Path(__file__).resolve().parent.parent / "csrc"
JIT_SOURCES = ("vlbert_fast_api.cpp", "roi_align_cpu.cpp", "philox_cpu.cpp")
"""The C++ part only: a JIT build on a user's machine should not depend on nvcc."""


@dataclass
class _State:
    module: ModuleType | None
    origin: str
    """'built' (setup.py), 'jit' (torch.utils.cpp_extension.load) or 'unavailable'."""
    reason: str | None
    """Why the extension is unavailable; None when it loaded."""


_STATE: _State | None = None


def _import_built() -> ModuleType:
    return importlib.import_module("vlbert_fast._C")


def _jit_build() -> ModuleType:
    from torch.utils.cpp_extension import load

    missing = [name for name in JIT_SOURCES if not (CSRC / name).is_file()]
    if missing:
        raise FileNotFoundError(f"C++ sources {missing} not found in {CSRC} (an install without csrc/)")
    return load(
        name="vlbert_fast_C_jit",
        sources=[str(CSRC / name) for name in JIT_SOURCES],
        extra_cflags=["-O3"],
        verbose=False,
    )


def _load() -> _State:
    try:
        return _State(_import_built(), "built", None)
    except ImportError as exc:
        built_error = f"{type(exc).__name__}: {exc}"
    if os.environ.get("VLBERT_FAST_NO_JIT") == "1":
        return _State(None, "unavailable", f"vlbert_fast._C is not built ({built_error}) and VLBERT_FAST_NO_JIT=1")
    warnings.warn(
        f"vlbert_fast._C is not built ({built_error}); JIT-building its C++ part with "
        "torch.utils.cpp_extension.load (about 30 s once, cached in TORCH_EXTENSIONS_DIR). "
        "Run `pip install -e . --no-build-isolation` to build it ahead of time.",
        RuntimeWarning,
        stacklevel=3,
    )
    try:
        return _State(_jit_build(), "jit", None)
    except Exception as exc:  # a compiler error, a missing toolchain, no csrc/: report it, never crash
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return _State(
            None,
            "unavailable",
            f"vlbert_fast._C is not built ({built_error}) and the JIT build failed ({type(exc).__name__}: "
            f"{first_line[:300]})",
        )


def _state() -> _State:
    global _STATE
    if _STATE is None:
        _STATE = _load()
    return _STATE


def load() -> ModuleType | None:
    """The extension module, or None (see `unavailable_reason`)."""
    return _state().module


def unavailable_reason() -> str | None:
    """Why the extension cannot be used; None when it can."""
    return _state().reason


def describe() -> str:
    """One line for `vlbert-fast env`: built or not, how, with or without CUDA."""
    state = _state()
    if state.module is None:
        return f"not available: {state.reason}"
    how = "built by setup.py" if state.origin == "built" else "JIT-built (setup.py did not build it)"
    parts = "C++ CPU + CUDA" if state.module.with_cuda() else "C++ CPU only, without CUDA"
    return f"{how}, {parts} ({state.module.__file__})"


def _reset_for_tests() -> None:
    """Forget the loaded state so a test can exercise the fallback path; the next call loads again."""
    global _STATE
    _STATE = None
