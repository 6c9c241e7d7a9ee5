"""The torch.library layer shared by every public op.

Each public op (the REGISTRY of dispatch.py) is a custom op `torch.ops.vlbert_fast.<op>` with a fake (meta)
implementation and a registered autograd formula whose backward is a second custom op, `<op>_backward`. The public
function checks its inputs, resolves `backend="auto"` to a backend name (shapes, dtypes and devices only: no values
read) and calls the custom op with that name; the op's implementation runs the backend. So torch.compile sees one
opaque node per op (fullgraph tracing never enters a Triton launcher, a Python loop over sequences or a `.tolist()`),
and CUDA graphs capture kernels that read everything, the dropout key included, from device memory.

Backward formulas: the Triton, native and chunked backends have their own (kernels that take the forward's saved
statistics). The plain-PyTorch backends (reference, and a few cheap PyTorch parts) have autograd's, which an opaque
op cannot keep from its forward: their `<op>_backward` recomputes the forward under autograd, switched back on inside
the op (`vjp`). To spare eager CPU runs that recomputation, the public
functions call the reference directly, outside the custom op, when not compiling (`use_custom_op`): the same
function and the same autograd graph as before the ops were registered.

Dropout keys (`dropout_seed`): a [1] int64 tensor on the inputs' device, drawn there by torch's generator of that
device when the caller gives none; the kernels load it (kernels/philox.py). Nothing reads it on the host per call.

Debug checks (`debug_checks`): input checks that must read tensor values (a host sync on a GPU: batch indices of
RoIs, label ranges, cu_seqlens) run only with VLBERT_FAST_DEBUG_CHECKS=1 in the environment (or inside
`debug_checks_enabled()`); shape, dtype and device checks always run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence

import torch

NAMESPACE = "vlbert_fast"
DEBUG_ENV = "VLBERT_FAST_DEBUG_CHECKS"
_debug_override: list[bool] = []


def debug_checks() -> bool:
    """True when the checks that read tensor values should run: VLBERT_FAST_DEBUG_CHECKS=1 (or inside
    `debug_checks_enabled`), and never while torch.compile traces (fake tensors hold no values)."""
    if torch.compiler.is_compiling():
        return False
    if _debug_override:
        return _debug_override[-1]
    return os.environ.get(DEBUG_ENV, "0") not in ("", "0")


@contextlib.contextmanager
def debug_checks_enabled(enabled: bool = True) -> Iterator[None]:
    """Turns the value checks on (or off) inside the block, whatever the environment says."""
    _debug_override.append(enabled)
    try:
        yield
    finally:
        _debug_override.pop()


def use_custom_op(backend: str) -> bool:
    """Whether the public function calls its custom op: always for the kernel backends; for the plain-PyTorch
    reference only under torch.compile (in eager mode autograd's own graph serves it, with no recomputation)."""
    return backend != "reference" or torch.compiler.is_compiling()


def dropout_seed(seed: int | torch.Tensor | None, dropout_p: float, device: torch.device) -> torch.Tensor | None:
    """The dropout key as a [1] int64 tensor on `device`; None without dropout. A tensor is taken as it is (checked
    by shape, dtype and device only); an int is copied to the device; None draws a fresh key in [0, 2**62) from the
    device's generator (torch.manual_seed governs it; under CUDA graphs each replay draws anew)."""
    if dropout_p == 0:
        return None
    if seed is None:
        return torch.randint(0, 2**62, (1,), device=device, dtype=torch.int64)
    if isinstance(seed, torch.Tensor):
        if seed.dtype != torch.int64 or seed.numel() != 1:
            raise ValueError(f"seed: expected a one-element int64 tensor, found {seed.dtype} {tuple(seed.shape)}")
        if seed.device != torch.device(device):
            raise ValueError(f"seed: on {seed.device}, but the inputs are on {device}; draw it there")
        return seed.reshape(1)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed: expected an integer in [0, 2**63), a [1] int64 tensor or None, found {seed!r}")
    return torch.tensor([seed], dtype=torch.int64, device=device)


@contextlib.contextmanager
def _autograd_inside_custom_op() -> Iterator[None]:
    """Autograd switched back on inside a custom op's implementation, where the dispatcher excludes its keys (the
    op's own autograd formula sits above): the reference backward is autograd's, recorded and run right here."""
    exclude = torch._C._dispatch_tls_local_exclude_set()
    exclude = exclude.remove(torch._C.DispatchKey.AutogradFunctionality).remove(torch._C.DispatchKey.ADInplaceOrView)
    with torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude), torch.enable_grad():
        yield


def require_key(seed: torch.Tensor | None, dropout_p: float) -> torch.Tensor | None:
    """The key a custom op's implementation was given: with dropout there must be one (the public functions draw
    it), since the forward and its backward must draw the same mask; without dropout None (never read)."""
    if dropout_p > 0 and seed is None:
        raise ValueError("seed: a custom op with dropout needs its key (a [1] int64 tensor); the public op draws one")
    return seed if dropout_p > 0 else None


def vjp(
    fn: Callable[..., torch.Tensor],
    primals: Sequence[torch.Tensor | None],
    grad_out: torch.Tensor,
    *rest,
) -> list[torch.Tensor | None]:
    """Gradients of fn(*primals, *rest) against grad_out, one per primal (None for None or non-floating primals):
    the backward of a plain-PyTorch backend inside a `<op>_backward` custom op, by recomputing its forward under
    autograd (module docstring)."""
    slots = [i for i, t in enumerate(primals) if t is not None and t.is_floating_point()]
    with _autograd_inside_custom_op():
        args = [t.detach().requires_grad_() if i in slots else t for i, t in enumerate(primals)]
        out = fn(*args, *rest)
        diff = torch.autograd.grad(out, [args[i] for i in slots], grad_out, allow_unused=True)
    grads: list[torch.Tensor | None] = [None] * len(primals)
    for i, g in zip(slots, diff, strict=True):
        grads[i] = g if g is not None else torch.zeros_like(primals[i])
    return grads


def or_empty(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """A custom op returns tensors only: an absent gradient or statistic travels as an empty tensor."""
    return t if t is not None else like.new_empty(0)


def unaliased(outputs: Sequence[torch.Tensor], inputs: Sequence[torch.Tensor | None] = ()) -> tuple[torch.Tensor, ...]:
    """`outputs` with every tensor that shares memory with an input or an earlier output cloned: a custom op's
    outputs may alias nothing (autograd hands x + y's two inputs one gradient tensor; kernels return views of one
    buffer of partial sums)."""
    seen = {t.untyped_storage().data_ptr() for t in inputs if t is not None and t.numel()}
    result = []
    for t in outputs:
        if t.numel():
            ptr = t.untyped_storage().data_ptr()
            if ptr in seen:
                t = t.clone()
                ptr = t.untyped_storage().data_ptr()
            seen.add(ptr)
        result.append(t)
    return tuple(result)
