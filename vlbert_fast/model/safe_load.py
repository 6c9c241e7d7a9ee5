"""Weights-only reading of torch files: nothing a user loads can run code.

A torch file (`torch.save`) is a pickle, and a pickle may name any importable function to be called while it loads
(`os.system`, `builtins.exec`, ...). Every torch file this package reads goes through `load_torch_file`: torch's
weights-only unpickler (tensors, containers, numbers, strings, torch.Size) plus `allowed_globals()`, exactly the
classes the files we write hold besides those: DeepSpeed's checkpoint bookkeeping (its ZeRO stage enum, loss scaler
and parameter-fragment records). Any other global is refused, before it is called, with an error naming the file.

A file of one of our checkpoints is also checked against the manifest its checkpoint was saved with (size and
sha256 of every file, in checkpoint.json; engine/checkpoint_io.py): `load_torch_file(path, expected=digest)` checks
the file before a byte of it is unpickled, so a changed, missing or truncated file is an error naming it.

Code of others that calls `torch.load(weights_only=False)` itself (DeepSpeed's universal-checkpoint loader and its
zero_to_fp32) runs inside `weights_only_everywhere()`, which has torch force weights-only loading, with the same
allowlist, for that span.

safetensors files hold no code by construction; `load_safetensors_file` only turns their errors into ours.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
_CHUNK = 1 << 20


class WeightsFileError(RuntimeError):
    """A weights or checkpoint file that must not or cannot be loaded: missing, truncated, changed since its
    manifest was written, not a torch file, or holding objects beyond plain weights. The message names the file."""


@dataclass(frozen=True)
class FileDigest:
    """What the manifest records of one file."""

    size: int
    sha256: str

    def to_dict(self) -> dict:
        return {"size": self.size, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, value: object, source: str) -> FileDigest:
        if (
            not isinstance(value, dict)
            or not isinstance(value.get("size"), int)
            or not isinstance(value.get("sha256"), str)
            or len(value["sha256"]) != 64
        ):
            raise WeightsFileError(
                f"{source}: a manifest entry must be {{'size': int, 'sha256': 64 hex}}, found {value!r}"
            )
        return cls(value["size"], value["sha256"])


def digest(path: str | os.PathLike) -> FileDigest:
    """Size and sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return FileDigest(size, h.hexdigest())


def size_problem(path: Path, expected: FileDigest) -> str | None:
    """Why `path` cannot be the file the manifest describes, judged by its size alone (cheap); None if it may be."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size < expected.size:
        return f"truncated: {size} bytes, the manifest says {expected.size}"
    if size != expected.size:
        return f"changed since it was saved: {size} bytes, the manifest says {expected.size}"
    return None


def verify(path: str | os.PathLike, expected: FileDigest) -> None:
    """Raises WeightsFileError unless `path` has the manifest's size and sha256."""
    path = Path(path)
    problem = size_problem(path, expected)
    if problem is None and digest(path).sha256 != expected.sha256:
        problem = "changed since it was saved: its sha256 differs from the manifest's"
    if problem is not None:
        raise WeightsFileError(f"{path}: {problem}; refused (not a byte of it was unpickled)")


def prefer_cpu_accelerator() -> None:
    """Before DeepSpeed's first import, on a machine without CUDA: DeepSpeed is told to use its CPU accelerator, which
    it would otherwise pick itself after a warning that it found no GPU (on every offline command's output)."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def allowed_globals(legacy: bool = False) -> list:
    """The classes our checkpoint files hold besides torch's weights-only types: DeepSpeed's ZeroStageEnum, its
    loss scalers and its `fragment_address` records (optimizer states of ZeRO 1-3, bf16 and fp16). `legacy` (only for
    a trusted checkpoint without a manifest): also numpy's array reconstruction, which checkpoints written before the
    manifest used for numpy's RNG state (it rebuilds an array from its bytes and runs no other code)."""
    prefer_cpu_accelerator()
    try:
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address
    except ImportError:  # no DeepSpeed, no DeepSpeed checkpoint to read
        return []
    allowed = [ZeroStageEnum, LossScaler, DynamicLossScaler, fragment_address]
    if legacy:
        import numpy as np

        allowed += [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    return allowed


def _allowing(allowed: list):
    """torch's safe_globals for those of `allowed` not already allowed: the context removes what it added when it
    exits, so a nested one adding the same classes (a file read through our loader inside `weights_only_everywhere`)
    would take them away from the outer one, and DeepSpeed's own torch.load calls after it would be refused."""
    present = torch.serialization.get_safe_globals()
    return torch.serialization.safe_globals([g for g in allowed if g not in present])


def _refusal(path: str, exc: BaseException) -> WeightsFileError:
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
        detail = next((line.strip() for line in text.splitlines() if "GLOBAL" in line or "Unsupported" in line), "")
        return WeightsFileError(
            f"{path}: refused: it holds objects beyond plain weights, which could run code when loaded "
            f"({detail or text.splitlines()[0]}). Only tensors, containers, numbers, strings and the DeepSpeed "
            f"bookkeeping classes our checkpoints hold are loaded"
        )
    first = text.splitlines()[0] if text else ""
    return WeightsFileError(f"{path}: not a readable torch file (truncated or damaged?): {type(exc).__name__}: {first}")


def _checked(path: Path, expected: FileDigest | None) -> Path:
    """`path`, verified against its manifest entry when there is one, else at least existing."""
    if expected is not None:
        verify(path, expected)
    elif not path.is_file():
        raise WeightsFileError(f"{path}: no such file")
    return path


def load_torch_file(
    path: str | os.PathLike, expected: FileDigest | None = None, map_location: object = "cpu", legacy: bool = False
) -> object:
    """The object of a torch file, loaded weights-only with `allowed_globals(legacy)`; with `expected` (its manifest
    entry) the file is verified first. Any failure is a WeightsFileError naming the file."""
    path = _checked(Path(path), expected)
    try:
        with _allowing(allowed_globals(legacy)):
            return torch.load(str(path), map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise _refusal(str(path), exc) from None


def check_globals(path: str | os.PathLike, legacy: bool = False) -> None:
    """Refuses, naming the file, a torch file whose pickle names a global beyond the weights-only types and
    `allowed_globals()`. Static: it reads the pickle's opcodes and runs nothing. For files that code of others loads
    (inside `weights_only_everywhere`, whose refusal cannot name the file)."""
    try:
        with _allowing(allowed_globals(legacy)):
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise _refusal(str(path), exc) from None
    if unsafe:
        raise WeightsFileError(
            f"{path}: refused: it holds objects beyond plain weights, which could run code when loaded (globals "
            f"{', '.join(sorted(unsafe))}). Only tensors, containers, numbers, strings and the DeepSpeed bookkeeping "
            f"classes our checkpoints hold are loaded"
        )


@contextlib.contextmanager
def weights_only_everywhere(legacy: bool = False) -> Iterator[None]:
    """Every torch.load inside the block is weights-only with `allowed_globals(legacy)`, even one that asks for
    weights_only=False (torch reads TORCH_FORCE_WEIGHTS_ONLY_LOAD at each call). Restores the environment after."""
    before = os.environ.get(FORCE_WEIGHTS_ONLY)
    os.environ[FORCE_WEIGHTS_ONLY] = "1"
    try:
        with _allowing(allowed_globals(legacy)):
            yield
    except pickle.UnpicklingError as exc:
        raise WeightsFileError(f"refused a checkpoint file: it holds objects beyond plain weights ({exc})") from None
    finally:
        if before is None:
            os.environ.pop(FORCE_WEIGHTS_ONLY, None)
        else:
            os.environ[FORCE_WEIGHTS_ONLY] = before


def load_safetensors_file(path: str | os.PathLike, expected: FileDigest | None = None) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors (optionally verified against its manifest entry); errors name the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = _checked(Path(path), expected)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsFileError(f"{path}: not a readable safetensors file (truncated or damaged?): {exc}") from None
