"""Backend dispatch shared by every op (xformers-style capability declarations).

An op is a list of backends in order of preference. Each backend declares, for given inputs, the reasons it cannot
run them (an empty list means it can), and optionally the reasons `auto` should pass over it although it can (the
Triton interpreter: correct, for tests, but far too slow to choose by default). `backend="auto"` takes the first
backend with neither, else the first that can run; an explicit backend that cannot run raises `BackendNotSupported`
listing the reasons; when no backend can run, the error lists every rejected backend with its reasons.
`vlbert-fast env` prints each op's backends and what `auto` picks.

`triton_reasons` is the common half of every Triton backend's declaration (importable, device, dtypes); the op adds
its own limits (sizes).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..kernels.interpreter import interpreter_on

BACKEND_NAMES = ("auto", "reference", "triton", "native")


class BackendNotSupported(RuntimeError):
    """No backend (or not the one asked for) can run these inputs; the message lists why, per backend."""


@dataclass(frozen=True)
class Backend:
    name: str
    """Backend name as users pass it: reference, triton, native, or an op-specific one (sdpa, flash_attn)."""
    run: Callable[..., Any]
    """The implementation; called with the op's arguments."""
    reasons: Callable[..., list[str]]
    """Why it cannot run the given arguments; [] when it can."""
    auto_skip: Callable[..., list[str]] | None = None
    """Why `auto` should pass over it for these arguments although it can run them; None or [] when it should not."""

    def skip_reasons(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.auto_skip(*args, **kwargs) if self.auto_skip is not None else []


class Op:
    """One public op and its backends, in order of preference for `auto`."""

    def __init__(self, name: str, backends: list[Backend]):
        self.name = name
        self.backends = {b.name: b for b in backends}

    def not_supported_reasons(self, *args: Any, **kwargs: Any) -> dict[str, list[str]]:
        """Backend name -> reasons it cannot run these inputs ([] when it can)."""
        return {name: backend.reasons(*args, **kwargs) for name, backend in self.backends.items()}

    def select(self, backend: str, *args: Any, **kwargs: Any) -> Backend:
        if backend != "auto" and backend not in self.backends:
            raise BackendNotSupported(
                f"{self.name}: unknown backend {backend!r}; choose one of {['auto', *self.backends]}"
            )
        if backend != "auto":
            reasons = self.backends[backend].reasons(*args, **kwargs)
            if reasons:
                raise BackendNotSupported(
                    f"{self.name}: backend {backend!r} cannot run these inputs: {'; '.join(reasons)}"
                )
            return self.backends[backend]
        rejected, passed_over = {}, []
        for name, candidate in self.backends.items():
            reasons = candidate.reasons(*args, **kwargs)
            if reasons:
                rejected[name] = reasons
            elif candidate.skip_reasons(*args, **kwargs):
                passed_over.append(candidate)
            else:
                return candidate
        if passed_over:
            return passed_over[0]
        listing = "\n".join(f"  {name}: {'; '.join(reasons)}" for name, reasons in rejected.items())
        raise BackendNotSupported(f"{self.name}: no backend can run these inputs:\n{listing}")

    def __call__(self, *args: Any, backend: str = "auto", **kwargs: Any) -> Any:
        return self.select(backend, *args, **kwargs).run(*args, **kwargs)


REGISTRY: dict[str, Op] = {}


def register(op: Op) -> Op:
    REGISTRY[op.name] = op
    return op


# ---------------------------------------------------------------------------------------------------------------------
# Triton capability, shared by every op's triton backend

TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


_IMPORT_ERRORS: dict[str, str | None] = {}


def import_error(module: str) -> str | None:
    """None when `module` imports; else why not. Probed once per process, and eagerly when the ops are imported
    (triton here, flash-attn in attention.py), so torch.compile's tracing only reads the answer: it cannot trace an
    import that fails."""
    if module not in _IMPORT_ERRORS:
        try:
            importlib.import_module(module)
        except Exception as exc:  # a broken install fails in many ways; report it, do not crash dispatch
            _IMPORT_ERRORS[module] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        else:
            _IMPORT_ERRORS[module] = None
    return _IMPORT_ERRORS[module]


def triton_import_error() -> str | None:
    """None when triton imports; else why not (once per process)."""
    return import_error("triton")


import_error("triton")


def triton_reasons(
    tensors: Mapping[str, torch.Tensor | None], float_dtypes: tuple[torch.dtype, ...] = TRITON_DTYPES
) -> list[str]:
    """Why Triton kernels cannot take these tensors (named as the op's arguments): triton not importable, tensors
    on several devices or on a CPU without the interpreter, a floating dtype the kernels do not handle, bf16 under
    the interpreter (broken there: its arithmetic and reductions give wrong results)."""
    error = triton_import_error()
    if error is not None:
        return [f"triton is not importable ({error})"]
    present = {name: t for name, t in tensors.items() if t is not None}
    reasons = []
    devices = sorted({str(t.device) for t in present.values()})
    if len(devices) > 1:
        where = ", ".join(f"{name} on {t.device}" for name, t in present.items())
        reasons.append(f"tensors are on different devices ({where})")
    for device in {t.device for t in present.values()}:
        if device.type == "cpu" and not interpreter_on():
            reasons.append("tensors are on the CPU: Triton runs on CUDA GPUs (or under TRITON_INTERPRET=1, for tests)")
        elif device.type not in ("cpu", "cuda"):
            reasons.append(f"device {device} is not supported (CUDA GPUs only)")
    for name, t in present.items():
        if not t.is_floating_point():
            continue
        if t.dtype not in float_dtypes:
            reasons.append(f"{name}: dtype {t.dtype} is not supported (supported: {', '.join(map(str, float_dtypes))})")
        elif t.dtype == torch.bfloat16 and t.device.type == "cpu":
            reasons.append(f"{name}: bfloat16 gives wrong results in the Triton interpreter (test bf16 on a GPU)")
    return reasons


def interpreted(device: torch.device) -> list[str]:
    """The `auto_skip` of a triton backend: on CPU tensors it runs in the interpreter, right but slow."""
    if device.type == "cpu":
        return ["runs in the Triton interpreter on CPU tensors: correct, but far slower than the reference"]
    return []
