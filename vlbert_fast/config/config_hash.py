"""What a run computes, as a hash of its config: the guard that refuses to resume a checkpoint under a different
config (engine/checkpoint.py) compares these.

The hash covers the config minus RESUME_FREE_KEYS: keys that change how a run is executed or reported, not what it
computes. A section's name leaves out the whole section.
"""

from __future__ import annotations

import hashlib
import json

from .config_files import to_dict

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


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def hashed_config(config: dict) -> dict:
    """The config as {dotted key: value}, without RESUME_FREE_KEYS."""
    free = tuple(f"{key}." for key in RESUME_FREE_KEYS)
    return {k: v for k, v in _flatten(config).items() if k not in RESUME_FREE_KEYS and not k.startswith(free)}


def config_hash(config) -> str:
    """The hash of a config (a dataclass or its dict)."""
    tree = hashed_config(config if isinstance(config, dict) else to_dict(config))
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:16]


def config_diff(saved: dict, current: dict) -> list[str]:
    """'key: saved -> current' for every hashed key that differs."""
    a, b = hashed_config(saved), hashed_config(current)
    missing = object()
    return [
        f"{k}: {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k, missing) != b.get(k, missing)
    ]
