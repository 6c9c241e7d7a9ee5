"""Consolidated fp32 weights of a checkpoint, read offline on the CPU (no process group, any world size).

ZeRO 1-3: DeepSpeed's zero_to_fp32 merges every rank's fp32 master partitions (for ZeRO-3 the parameters exist only
as those partitions). Stage 0: the model-states file holds the whole module; in bf16/fp16 its fp32 master copies are
in the optimizer state (`fp32_groups`, in the order of `param_shapes`, or of our parameter groups where DeepSpeed
records none), and those are taken, not the rounded module.

Every file is checked against the checkpoint's manifest (size and sha256) before any is read, and read weights-only
(model/safe_load.py; DeepSpeed's zero_to_fp32 runs inside `weights_only_everywhere`). A checkpoint without a manifest
is read only with `trust_foreign` (still weights-only).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch

from .checkpoint_dir import (
    CLIENT_KEY,
    LATEST,
    CheckpointError,
    find_checkpoint,
    is_complete,
    marker_and_manifest,
    read_marker,
    verify_checkpoint,
)
from .safe_load import WeightsFileError, check_globals, load_torch_file, weights_only_everywhere


def _zero_files(tag_dir: Path) -> list[Path]:
    return sorted(tag_dir.glob("*zero_pp_rank_*_optim_states.pt"))


def verified(tag_dir: Path, trust_foreign: bool = False) -> bool:
    """Checks every file of the checkpoint against its manifest (size, sha256; no torch file beside them), or, for a
    checkpoint without one, that it is trusted. Raises CheckpointError / WeightsFileError naming the file. Returns
    whether the checkpoint is a trusted one without a manifest (`legacy` for model/safe_load.py)."""
    _, manifest = marker_and_manifest(tag_dir, trust_foreign, "pass --trust-foreign (trust_foreign=True)")
    if manifest is not None:
        verify_checkpoint(tag_dir, manifest)
    return manifest is None


def _stage0_state_dict(tag_dir: Path, legacy: bool) -> dict[str, torch.Tensor]:
    path = tag_dir / "mp_rank_00_model_states.pt"
    if not path.is_file():
        raise CheckpointError(f"{tag_dir}: no mp_rank_00_model_states.pt and no ZeRO optimizer files")
    states = load_torch_file(path, legacy=legacy)
    module = {k.removeprefix("module."): v for k, v in states["module"].items()}
    optim = states.get("optimizer") or {}
    groups = optim.get("fp32_groups") if isinstance(optim, dict) else None
    if groups:
        if states.get("param_shapes"):
            names = [name.removeprefix("module.") for shapes in states["param_shapes"] for name in shapes]
        else:  # DeepSpeed's unfused fp16/bf16 wrapper records no names: our groups' order (engine/optim.py)
            frozen = states.get("frozen_param_shapes") or {}
            skip = set(states.get("buffer_names") or []) | set(frozen if isinstance(frozen, dict) else [])
            trainable = [(n, t) for n, t in module.items() if n not in skip]
            names = [n for n, t in trainable if t.dim() >= 2] + [n for n, t in trainable if t.dim() < 2]
        masters = [t for group in groups for t in group]
        mismatch = len(names) != len(masters)
        if mismatch or any(module[n].numel() != m.numel() for n, m in zip(names, masters, strict=True)):
            raise CheckpointError(f"{path}: the fp32 master tensors do not match the module's parameters")
        for name, master in zip(names, masters, strict=True):
            module[name] = master.detach().float().view(module[name].shape).clone()
    return {k: v.float() if v.is_floating_point() else v for k, v in module.items()}


def consolidated_state_dict(tag_dir: Path, trust_foreign: bool = False) -> dict[str, torch.Tensor]:
    """fp32 state dict (our module's names) of the checkpoint in `tag_dir`, its files verified first."""
    tag_dir = Path(tag_dir)
    legacy = verified(tag_dir, trust_foreign)
    if not _zero_files(tag_dir):
        return _stage0_state_dict(tag_dir, legacy)
    for path in sorted(tag_dir.glob("*.pt")):  # zero_to_fp32 reads them itself: refuse by name what it would refuse
        check_globals(path, legacy)
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    try:
        with (
            weights_only_everywhere(legacy),
            contextlib.redirect_stdout(io.StringIO()),  # progress, shapes
            contextlib.redirect_stderr(io.StringIO()),
        ):
            state = get_fp32_state_dict_from_zero_checkpoint(str(tag_dir.parent), tag=tag_dir.name)
    except WeightsFileError as exc:
        raise CheckpointError(f"{tag_dir}: {exc}") from None
    except (RuntimeError, EOFError, ValueError, KeyError) as exc:  # a trusted foreign checkpoint that is damaged
        raise CheckpointError(f"{tag_dir}: cannot consolidate its ZeRO files ({type(exc).__name__}: {exc})") from None
    return {k.removeprefix("module."): v.float() if v.is_floating_point() else v for k, v in state.items()}


def checkpoint_info(tag_dir: Path, trust_foreign: bool = False) -> dict:
    """The marker (step, config, ...) of a checkpoint, or the same fields from its DeepSpeed client state (a
    checkpoint without a marker: only with `trust_foreign`, weights-only)."""
    if is_complete(tag_dir):
        return read_marker(tag_dir)
    files = sorted(tag_dir.glob("*model_states.pt"))
    if not files:
        raise CheckpointError(f"{tag_dir}: not a DeepSpeed checkpoint (no *model_states.pt)")
    states = load_torch_file(files[0], legacy=verified(tag_dir, trust_foreign))
    if CLIENT_KEY not in states:
        raise CheckpointError(f"{files[0]}: no vlbert_fast trainer state: not a checkpoint of ours")
    return states[CLIENT_KEY]


def resolve_checkpoint(path: str | Path, notes: list[str] | None = None) -> Path:
    """A tag directory from a run, checkpoints or tag directory, or a clear error; `notes` receives the warning when
    the newest checkpoint was damaged and an older one is used."""
    if not Path(path).exists():
        raise CheckpointError(f"{path}: no such file or directory")
    found = find_checkpoint(Path(path), notes)
    if found is None:  # a foreign layout (no marker of ours) whose `latest` names a DeepSpeed tag: trusted or refused
        found = _latest_foreign_tag(Path(path))  # when its files are read (consolidated_state_dict)
    if found is None:
        raise CheckpointError(
            f"{path}: no complete checkpoint found (expected a run directory, its checkpoints/ directory with "
            f"`latest`, or a checkpoint tag directory)"
        )
    return found


def _latest_foreign_tag(path: Path) -> Path | None:
    ckpt_dir = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    latest = ckpt_dir / LATEST
    if not latest.is_file():
        return None
    tag_dir = ckpt_dir / latest.read_text(encoding="utf-8", errors="replace").strip()
    return tag_dir if tag_dir.is_dir() and any(tag_dir.glob("*model_states.pt")) else None
