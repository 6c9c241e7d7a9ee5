"""Backend dispatch shared by every op (xformers-style capability declarations).

An op is a list of backends in order of preference. Each backend declares, for given inputs, the reasons it cannot
run them (an empty list means it can). `backend="auto"` takes the first backend with no reasons; an explicit backend
that cannot run raises `BackendNotSupported` listing the reasons; when no backend can run, the error lists every
rejected backend with its reasons. `vlbert-fast env` prints each op's backends and what `auto` picks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
        rejected = {}
        for name, candidate in self.backends.items():
            reasons = candidate.reasons(*args, **kwargs)
            if not reasons:
                return candidate
            rejected[name] = reasons
        listing = "\n".join(f"  {name}: {'; '.join(reasons)}" for name, reasons in rejected.items())
        raise BackendNotSupported(f"{self.name}: no backend can run these inputs:\n{listing}")

    def __call__(self, *args: Any, backend: str = "auto", **kwargs: Any) -> Any:
        return self.select(backend, *args, **kwargs).run(*args, **kwargs)


REGISTRY: dict[str, Op] = {}


def register(op: Op) -> Op:
    REGISTRY[op.name] = op
    return op
