"""Checkpoints of a run: DeepSpeed's layout, a completion marker, an atomic `latest`, and an exact resume position.

Layout (run_dir/checkpoints):

    step120/                 one DeepSpeed tag: model/optimizer files of every rank, written by every rank
        checkpoint.json      the completion marker, written last by rank 0 (step, world size, config, its hash,
                             and the manifest: size and sha256 of every file of the checkpoint)
    latest                   the tag of the newest complete checkpoint, replaced atomically (write, then rename)

A save: every rank checks that its weights are finite (a non-finite weight aborts the run instead: no checkpoint ever
holds one, so the newest complete checkpoint is always the last finite one) and writes its DeepSpeed files through
our checkpoint engine (fsynced, each file's size and sha256 recorded; engine/checkpoint_io.py); rank 0 gathers the
manifest, fsyncs the directory, writes checkpoint.json (temp file, fsync, rename, directory fsync), then `latest` the
same way, then deletes what `keep_last_k` no longer keeps. A save killed at any point leaves `latest` on the previous
complete checkpoint; a tag directory without checkpoint.json is never loaded, and is removed by the next save.

A load checks each file against the manifest before a byte of it is unpickled, and unpickles weights-only
(model/safe_load.py). Choosing the checkpoint to resume (`find_checkpoint`), a complete checkpoint with a missing or
truncated file (sizes against the manifest) is passed over for the previous complete one, with a note naming both.
A checkpoint without a manifest (DeepSpeed's universal conversion, or one written by an older version) loads only
with engine.trust_foreign (--trust-foreign), and then weights-only as well.

The trainer's state travels in DeepSpeed's client_state under "vlbert_fast": step, epoch, the data loader's position
(micro batches this rank took in the epoch; the sampler restarts there), consumed samples, every rank's RNG states
(python, numpy, torch, CUDA), the lr schedule, the config and its hash, the package version, the world size.

Resume guard: a config whose hash (config/config_hash.py) differs from the checkpoint's refuses to resume, naming
the keys, unless engine.allow_config_change is set.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig, to_dict
from ..config.config_hash import config_diff, config_hash
from ..data.formats.paths import fsync_path, write_atomic
from ..model.checkpoint_dir import (
    CLIENT_KEY,
    LATEST,
    MANIFEST_KEY,
    MARKER,
    TAG_RE,
    CheckpointError,
    complete_tags,
    find_checkpoint,
    marker_and_manifest,
    tag_for,
)
from ..model.consolidate import resolve_checkpoint
from ..model.safe_load import check_globals, weights_only_everywhere
from ..version import __version__
from . import checkpoint_io
from .distributed import DistInfo, all_gather_objects, all_reduce_sum, barrier
from .guards import TrainingAborted, nonfinite_weights


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


def last_finite_checkpoint_advice(cfg) -> str:
    """What a run that stops on a non-finite number should do next: the checkpoint to resume from, named."""
    try:
        found = find_checkpoint(Path(cfg.run_dir) / "checkpoints")
    except CheckpointError as exc:
        return f"start again ({exc})"
    if found is None:
        return "start again: no checkpoint was saved before this"
    return f"resume from the last finite checkpoint, {found} (engine.resume=auto picks it)"


def resolve_resume(cfg: RunConfig, notes: list[str] | None = None) -> Path | None:
    """The checkpoint this run continues from, or None for a fresh start (engine.resume); `notes` receives the
    warning when the newest checkpoint was damaged and an older one is used."""
    resume = cfg.engine.resume
    if resume == "never":
        return None
    if resume == "auto":
        return find_checkpoint(Path(cfg.run_dir) / "checkpoints", notes)
    try:
        return resolve_checkpoint(resume, notes)  # the resolver of every command (model/consolidate.py)
    except CheckpointError as exc:
        raise CheckpointError(f"engine.resume={resume}: {exc}") from None


# ----------------------------------------------------------------------------------------------------------------------
# the config guard


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
    """Every RNG state as plain values and tensors (numpy's key array as a list: no numpy object in a checkpoint,
    so it loads weights-only without allowing numpy's reconstruction functions)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = (name, keys.tolist(), int(pos), int(has_gauss), float(cached))
    states = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# ----------------------------------------------------------------------------------------------------------------------
# save and load


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
    bad = nonfinite_weights(engine.module)
    if all_reduce_sum([len(bad)], info.device)[0]:
        shown = f" (on rank {info.rank}: {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''})" if bad else ""
        raise TrainingAborted(
            f"step {state.step}: the weights hold NaN or infinite values{shown}; no checkpoint saved. Lower the "
            f"learning rate or check the data, then {last_finite_checkpoint_advice(cfg)}"
        )
    if info.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if tag_dir.exists():  # an unfinished save of this step, or one of an abandoned continuation
            shutil.rmtree(tag_dir)
    state.consumed_samples += int(all_reduce_sum([local_samples], info.device)[0])
    config = to_dict(cfg)
    ours = {
        **{k: v for k, v in asdict(state).items() if k != "rng"},
        "rng": all_gather_objects(rng_states(), info),
        "lr_scheduler": scheduler.state_dict(),
        "world_size": info.world_size,
        "config": config,
        "config_hash": config_hash(config),
        "version": __version__,
    }
    from deepspeed.checkpoint import constants as ds

    # ds_to_universal requires this entry; with it the checkpoint converts without --inject_missing_state.
    universal = {ds.UNIVERSAL_CHECKPOINT_VERSION_KEY: ds.UNIVERSAL_CHECKPOINT_VERSION_VALUE}
    client_state = {CLIENT_KEY: ours, ds.UNIVERSAL_CHECKPOINT_INFO: universal}
    checkpoint_io.install(engine)  # our writer: fsync and the manifest
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state, save_latest=False)
    files = all_gather_objects(checkpoint_io.take_written(engine, tag_dir), info)  # after DeepSpeed's barrier
    faults.at("save", state.step)
    barrier()
    if info.is_main:
        manifest = {name: entry for rank_files in files for name, entry in rank_files.items()}
        fsync_path(tag_dir)
        marker = {
            "tag": tag,
            **{k: ours[k] for k in ("step", "epoch", "consumed_samples", "world_size", "config_hash", "version")},
            "zero_stage": cfg.engine.zero_stage,
            "precision": cfg.train.precision,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": config,
            MANIFEST_KEY: dict(sorted(manifest.items())),
        }
        write_atomic(tag_dir / MARKER, json.dumps(marker, indent=1) + "\n")
        write_atomic(ckpt_dir / LATEST, tag)
        prune(ckpt_dir, cfg.engine.keep_last_k, tag_dir)
    barrier()
    return tag_dir


def load(engine, cfg: RunConfig, info: DistInfo, tag_dir: Path, scheduler) -> tuple[TrainState, list[str]]:
    """Loads model, optimizer, schedule and trainer state from `tag_dir` on every rank. Returns the state (its `rng`
    is this rank's RNG states, or None when the world size changed) and notes for the log."""
    notes: list[str] = []
    how = "set engine.trust_foreign=true (--trust-foreign)"
    marker, manifest = marker_and_manifest(tag_dir, cfg.engine.trust_foreign, how)
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
    if manifest is None:  # trusted: DeepSpeed's universal loader reads these itself; refuse by name what it would
        for path in sorted(tag_dir.rglob("*.pt")):
            check_globals(path, legacy=True)
    checkpoint_io.expect(engine, tag_dir, manifest, cfg.engine.trust_foreign)
    # DeepSpeed reads the checkpoint's files through our checkpoint engine (verified, weights-only); its universal
    # loader reads some with torch.load itself, which weights_only_everywhere turns weights-only as well.
    with weights_only_everywhere(legacy=manifest is None):
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
