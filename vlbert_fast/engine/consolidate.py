"""Consolidated fp32 weights of a checkpoint, read offline on the CPU (no process group, any world size).

ZeRO 1-3: DeepSpeed's zero_to_fp32 merges every rank's fp32 master partitions (for ZeRO-3 the parameters exist only
as those partitions). Stage 0: the model-states file holds the whole module; in bf16/fp16 its fp32 master copies are
in the optimizer state (`fp32_groups`, in the order of `param_shapes`, or of our parameter groups where DeepSpeed
records none), and those are taken, not the rounded module.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch

from .checkpoint import CLIENT_KEY, CheckpointError, find_checkpoint, is_complete, read_marker


def _zero_files(tag_dir: Path) -> list[Path]:
    return sorted(tag_dir.glob("*zero_pp_rank_*_optim_states.pt"))


def _stage0_state_dict(tag_dir: Path) -> dict[str, torch.Tensor]:
    path = tag_dir / "mp_rank_00_model_states.pt"
    if not path.is_file():
        raise CheckpointError(f"{tag_dir}: no mp_rank_00_model_states.pt and no ZeRO optimizer files")
    states = torch.load(path, map_location="cpu", weights_only=False)
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


def consolidated_state_dict(tag_dir: Path) -> dict[str, torch.Tensor]:
    """fp32 state dict (our module's names) of the checkpoint in `tag_dir`."""
    tag_dir = Path(tag_dir)
    if not _zero_files(tag_dir):
        return _stage0_state_dict(tag_dir)
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # progress, shapes
        state = get_fp32_state_dict_from_zero_checkpoint(str(tag_dir.parent), tag=tag_dir.name)
    return {k.removeprefix("module."): v.float() if v.is_floating_point() else v for k, v in state.items()}


def checkpoint_info(tag_dir: Path) -> dict:
    """The marker (step, config, ...) of a checkpoint, or the same fields from its DeepSpeed client state."""
    if is_complete(tag_dir):
        return read_marker(tag_dir)
    files = sorted(tag_dir.glob("*model_states.pt"))
    if not files:
        raise CheckpointError(f"{tag_dir}: not a DeepSpeed checkpoint (no *model_states.pt)")
    states = torch.load(files[0], map_location="cpu", weights_only=False)
    if CLIENT_KEY not in states:
        raise CheckpointError(f"{files[0]}: no vlbert_fast trainer state: not a checkpoint of ours")
    return states[CLIENT_KEY]


def resolve_checkpoint(path: str | Path) -> Path:
    """A tag directory from a run, checkpoints or tag directory, or a clear error."""
    found = find_checkpoint(Path(path))
    if found is None:
        raise CheckpointError(
            f"{path}: no complete checkpoint found (expected a run directory, its checkpoints/ directory with "
            f"`latest`, or a checkpoint tag directory)"
        )
    return found
