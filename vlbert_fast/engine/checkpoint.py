"""Checkpoints of a run: DeepSpeed's layout, a completion marker, an atomic `latest`, and an exact resume position.

Layout (run_dir/checkpoints):

    step120/                 one DeepSpeed tag: model/optimizer files of every rank, written by every rank
        checkpoint.json      the completion marker, written last by rank 0 (step, world size, config, its hash)
    latest                   the tag of the newest complete checkpoint, replaced atomically (write, then rename)

A save: every rank writes its DeepSpeed files (DeepSpeed ends with a barrier), then rank 0 writes checkpoint.json
(temp file + rename), then `latest` (temp file + rename), then deletes what `keep_last_k` no longer keeps. A save
killed at any point leaves `latest` on the previous complete checkpoint; a tag directory without checkpoint.json is
never loaded, and is removed by the next save.

The trainer's state travels in DeepSpeed's client_state under "vlbert_fast": step, epoch, the data loader's position
(micro batches this rank took in the epoch; the sampler restarts there), consumed samples, every rank's RNG states
(python, numpy, torch, CUDA), the lr schedule, the config and its hash, the package version, the world size.

Resume guard: the hash covers the config minus the keys in RESUME_FREE_KEYS (they change how a run is executed or
reported, not what it computes). A different hash refuses to resume, naming the keys, unless
engine.allow_config_change is set.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig, to_dict
from ..version import __version__
from .distributed import DistInfo, all_reduce_sum, barrier

MARKER = "checkpoint.json"
LATEST = "latest"
TAG_RE = re.compile(r"^step(\d+)$")
CLIENT_KEY = "vlbert_fast"

RESUME_FREE_KEYS = (
    "run_dir",  # where the run lives: a run directory may be moved or copied
    "train.max_steps",  # extend or shorten the run (the lr schedule follows the new length)
    "train.log_every",
    "train.eval_batches",
    "train.peak_tflops",
    "data.root",  # the same data mounted elsewhere
    "data.num_workers",
    "model.kernels",  # implementations of the same math
    "model.check_inputs",
    "engine",  # execution: ZeRO, checkpoints, timeouts, fault policy (DeepSpeed refuses what it cannot load)
)


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or cannot be resumed here; the message says which and why."""


class ConfigChangedError(CheckpointError):
    """The run's config differs from the checkpoint's and engine.allow_config_change is off."""


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    """Micro batches this rank has taken from the current epoch (the sampler restarts after them)."""
    consumed_samples: int = 0
    """Rows trained on, all ranks together, up to the last checkpoint or log line."""
    nonfinite_steps: int = 0
    train_seconds: float = 0.0
    first_metrics: dict | None = None
    last_metrics: dict | None = None
    rng: dict | None = field(default=None, repr=False)
    """This rank's RNG states to restore once the data iterator exists (creating it draws from torch's RNG)."""


def tag_for(step: int) -> str:
    return f"step{step}"


def _step_of(tag_dir: Path) -> int:
    match = TAG_RE.match(tag_dir.name)
    return int(match.group(1)) if match else -1


def is_complete(tag_dir: Path) -> bool:
    return (tag_dir / MARKER).is_file()


def read_marker(tag_dir: Path) -> dict:
    return json.loads((tag_dir / MARKER).read_text())


def _is_deepspeed_tag(path: Path) -> bool:
    return any(path.glob("*model_states.pt"))


def complete_tags(ckpt_dir: Path) -> list[Path]:
    if not ckpt_dir.is_dir():
        return []
    tags = [p for p in ckpt_dir.iterdir() if p.is_dir() and TAG_RE.match(p.name) and is_complete(p)]
    return sorted(tags, key=_step_of)


def find_checkpoint(path: Path) -> Path | None:
    """The checkpoint (tag directory) that `path` names: a tag directory itself, or the `latest` complete one of a
    checkpoints directory or of a run directory. None when there is none."""
    path = Path(path)
    if is_complete(path) or _is_deepspeed_tag(path):
        return path
    ckpt_dir = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    latest = ckpt_dir / LATEST
    if latest.is_file():
        tag_dir = ckpt_dir / latest.read_text().strip()
        if is_complete(tag_dir):
            return tag_dir
    tags = complete_tags(ckpt_dir)  # `latest` lost or damaged by hand: the newest complete checkpoint still counts
    return tags[-1] if tags else None


def resolve_resume(cfg: RunConfig) -> Path | None:
    """The checkpoint this run continues from, or None for a fresh start (engine.resume)."""
    resume = cfg.engine.resume
    if resume == "never":
        return None
    if resume == "auto":
        return find_checkpoint(Path(cfg.run_dir) / "checkpoints")
    path = Path(resume)
    if not path.exists():
        raise CheckpointError(f"engine.resume={resume}: no such file or directory")
    found = find_checkpoint(path)
    if found is None:
        raise CheckpointError(
            f"engine.resume={resume}: no complete checkpoint there (expected a tag directory with {MARKER}, or a "
            f"checkpoints/run directory whose `{LATEST}` names one)"
        )
    return found


# ----------------------------------------------------------------------------------------------------------------------
# the config guard


def _drop(tree: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.get(key, {})
    tree.pop(leaf, None)


def hashed_config(config: dict) -> dict:
    tree = json.loads(json.dumps(config))  # a deep copy of plain data
    for key in RESUME_FREE_KEYS:
        _drop(tree, key)
    return tree


def config_hash(config: RunConfig | dict) -> str:
    tree = hashed_config(config if isinstance(config, dict) else to_dict(config))
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:16]


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_diff(saved: dict, current: dict) -> list[str]:
    """'key: saved -> current' for every hashed key that differs."""
    a, b = _flatten(hashed_config(saved)), _flatten(hashed_config(current))
    missing = object()
    return [
        f"{k}: {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k, missing) != b.get(k, missing)
    ]


def check_config(cfg: RunConfig, saved_config: dict, tag_dir: Path) -> list[str]:
    """Raises ConfigChangedError when the configs differ and the change is not allowed; returns the differences."""
    diffs = config_diff(saved_config, to_dict(cfg))
    if diffs and not cfg.engine.allow_config_change:
        raise ConfigChangedError(
            f"the config differs from the one checkpoint {tag_dir} was trained with:\n  "
            + "\n  ".join(diffs)
            + "\nresume with the same config, set engine.allow_config_change=true to continue anyway, or start a new "
            "run (another run_dir, or engine.resume=never)"
        )
    return diffs


# ----------------------------------------------------------------------------------------------------------------------
# RNG states


def rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _gather_objects(obj, info: DistInfo) -> list:
    import torch.distributed as dist

    if info.world_size == 1:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# save and load


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def prune(ckpt_dir: Path, keep_last_k: int, current: Path) -> list[Path]:
    """Deletes tag directories beyond the newest `keep_last_k` complete ones, and unfinished saves."""
    if keep_last_k == 0:
        return []
    tags = [p for p in ckpt_dir.iterdir() if p.is_dir() and TAG_RE.match(p.name)]
    kept = {*complete_tags(ckpt_dir)[-keep_last_k:], current}
    removed = [t for t in tags if t not in kept]
    for tag_dir in removed:
        shutil.rmtree(tag_dir, ignore_errors=True)
    return removed


def save(engine, cfg: RunConfig, info: DistInfo, state: TrainState, scheduler, local_samples: int, faults) -> Path:
    """Saves a checkpoint of step `state.step`; every rank must call it. `local_samples`: rows this rank trained on
    since the last save (added to state.consumed_samples). Returns the tag directory."""
    ckpt_dir = Path(cfg.run_dir) / "checkpoints"
    tag = tag_for(state.step)
    tag_dir = ckpt_dir / tag
    if info.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if tag_dir.exists():  # an unfinished save of this step, or one of an abandoned continuation
            shutil.rmtree(tag_dir)
    state.consumed_samples += int(all_reduce_sum([local_samples], info.device)[0])
    config = to_dict(cfg)
    ours = {
        **{k: v for k, v in asdict(state).items() if k != "rng"},
        "rng": _gather_objects(rng_states(), info),
        "lr_scheduler": scheduler.state_dict(),
        "world_size": info.world_size,
        "config": config,
        "config_hash": config_hash(config),
        "version": __version__,
    }
    from deepspeed.checkpoint.constants import (
        UNIVERSAL_CHECKPOINT_INFO,
        UNIVERSAL_CHECKPOINT_VERSION_KEY,
        UNIVERSAL_CHECKPOINT_VERSION_VALUE,
    )

    # ds_to_universal requires this entry; with it the checkpoint converts without --inject_missing_state.
    client_state = {
        CLIENT_KEY: ours,
        UNIVERSAL_CHECKPOINT_INFO: {UNIVERSAL_CHECKPOINT_VERSION_KEY: UNIVERSAL_CHECKPOINT_VERSION_VALUE},
    }
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state, save_latest=False)
    faults.at("save", state.step)
    barrier()
    if info.is_main:
        marker = {
            "tag": tag,
            "step": state.step,
            "epoch": state.epoch,
            "consumed_samples": state.consumed_samples,
            "world_size": info.world_size,
            "zero_stage": cfg.engine.zero_stage,
            "precision": cfg.train.precision,
            "config_hash": ours["config_hash"],
            "version": __version__,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": config,
        }
        _write_atomic(tag_dir / MARKER, json.dumps(marker, indent=1) + "\n")
        _write_atomic(ckpt_dir / LATEST, tag)
        prune(ckpt_dir, cfg.engine.keep_last_k, tag_dir)
    barrier()
    return tag_dir


def load(engine, cfg: RunConfig, info: DistInfo, tag_dir: Path, scheduler) -> tuple[TrainState, list[str]]:
    """Loads model, optimizer, schedule and trainer state from `tag_dir` on every rank. Returns the state (its `rng`
    is this rank's RNG states, or None when the world size changed) and notes for the log."""
    notes: list[str] = []
    marker = read_marker(tag_dir) if is_complete(tag_dir) else None
    if marker is not None:
        check_config(cfg, marker["config"], tag_dir)  # before the costly load
        if marker["world_size"] != info.world_size and not cfg.engine.load_universal and marker["zero_stage"] > 0:
            raise CheckpointError(
                f"{tag_dir} was saved by {marker['world_size']} ranks with ZeRO-{marker['zero_stage']}; this run "
                f"has {info.world_size}. Convert it to a universal checkpoint (python -m "
                f"deepspeed.checkpoint.ds_to_universal --input_folder {tag_dir} --output_folder {tag_dir}_universal) "
                f"and resume from that with engine.load_universal=true"
            )
    elif not cfg.engine.load_universal:
        raise CheckpointError(f"{tag_dir} has no {MARKER}: it is not a complete checkpoint of ours")
    load_path, client = engine.load_checkpoint(
        str(tag_dir.parent), tag=tag_dir.name, load_optimizer_states=True, load_lr_scheduler_states=False
    )
    if load_path is None or not client or CLIENT_KEY not in client:
        raise CheckpointError(f"{tag_dir}: DeepSpeed could not load it, or it holds no vlbert_fast trainer state")
    ours = client[CLIENT_KEY]
    notes += [f"config change allowed: {d}" for d in check_config(cfg, ours["config"], tag_dir)]
    scheduler.load_state_dict(ours["lr_scheduler"])
    for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_last_lr(), strict=True):
        group["lr"] = lr
    state = TrainState(**{k: ours[k] for k in TrainState.__dataclass_fields__ if k in ours and k != "rng"})
    saved_ws = ours["world_size"]
    if saved_ws == info.world_size:
        state.rng = ours["rng"][info.rank]
    else:
        # Ranks take every world_size-th batch of one global sequence: restart at the same global position.
        done = state.batch_in_epoch * saved_ws
        state.batch_in_epoch = done // info.world_size
        notes.append(
            f"world size {saved_ws} -> {info.world_size}: data restarts at global micro batch "
            f"{state.batch_in_epoch * info.world_size} of epoch {state.epoch} (saved at {done}); RNG states reseeded"
        )
    return state, notes
