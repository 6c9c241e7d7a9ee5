"""Exported models: `save_pretrained` writes consolidated fp32 weights as model.safetensors plus config.json (our
ModelConfig's fields); `from_pretrained` builds the model and loads them. `from_pretrained` also reads a training
run or checkpoint directly (consolidating ZeRO shards on the fly), so an export is a convenience, not a requirement.

model.safetensors holds VLBertForPretraining's state dict (fp32); its metadata names the format, the package
version, and the checkpoint and step it came from.

Nothing loaded here can run code: exports are safetensors (data only), a checkpoint's files are verified against its
manifest and unpickled weights-only (model/safe_load.py, model/consolidate.py); a checkpoint without a manifest of
ours loads only with `trust_foreign=True` (`--trust-foreign`, engine.trust_foreign), still weights-only.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ConfigError, ModelConfig, load_config
from ..version import __version__
from .checkpoint_dir import CheckpointError
from .safe_load import WeightsFileError, load_safetensors_file, load_torch_file
from .vlbert import VLBertForPretraining, VLBertModel

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
FORMAT = "vlbert_fast"


class PretrainedError(WeightsFileError):
    """A directory that is not an export (or checkpoint) of ours, or weights that do not fit the config."""


def is_export(path: str | Path) -> bool:
    path = Path(path)
    if not (path / WEIGHTS).is_file() or not (path / CONFIG).is_file():
        return False
    try:
        config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PretrainedError(f"{path / CONFIG}: not a readable JSON config ({exc})") from None
    return isinstance(config, dict) and "visual_feature_dim" in config  # HF BERT configs have no visual part


def model_config_from_dict(values: dict, source: str) -> ModelConfig:
    """A ModelConfig from plain values, checked as a config file is (types, nested sections, unknown keys)."""
    try:
        return load_config(ModelConfig, extra=[values])
    except ConfigError as exc:
        raise PretrainedError(f"{source}: invalid model config: {exc}") from exc


def save_pretrained(
    state_dict: dict[str, torch.Tensor], cfg: ModelConfig, out: str | Path, metadata: dict | None = None
) -> Path:
    """Writes `state_dict` (VLBertForPretraining's names) as fp32 safetensors and `cfg` as config.json into `out`."""
    from safetensors.torch import save_file

    out = Path(out)
    expected = VLBertForPretraining(cfg).state_dict()
    check_state_dict(state_dict, expected, f"weights for {out}")
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state_dict.items()}
    meta = {"format": FORMAT, "version": __version__, **{k: str(v) for k, v in (metadata or {}).items()}}
    save_file(tensors, str(out / WEIGHTS), metadata=meta)
    (out / CONFIG).write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    return out


def check_state_dict(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:6]}{' ...' if len(missing) > 6 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}")
        if shapes:
            parts.append(f"shape mismatch (found vs model) {shapes[:6]}")
        raise PretrainedError(f"{source} do not fit the model: " + "; ".join(parts))


@dataclass
class Weights:
    """What `resolve_weights` found: an fp32 state dict in our module's names, the model config it was saved with
    (None for a foreign file that records none), and the file or checkpoint directory it was read from."""

    state: dict[str, torch.Tensor]
    cfg: ModelConfig | None
    source: Path


def resolve_weights(path: str | Path, trust_foreign: bool = False) -> Weights:
    """The one way from a path to weights, for every command and init_from: an export (its directory or its
    model.safetensors), a run directory, its checkpoints/ directory (`latest`, passing over a damaged newest one) or a
    checkpoint tag directory of ours (any ZeRO stage, the fp32 masters of a bf16/fp16 run: model/consolidate.py), or
    a state-dict file (.safetensors; .pt only with `trust_foreign`, weights-only). Every pickled file of a checkpoint
    is verified against its manifest before it is read; a checkpoint without one needs `trust_foreign`."""
    path = Path(path)
    if not path.exists():
        raise PretrainedError(f"{path}: no such file or directory")
    if path.is_file():
        if path.name == WEIGHTS and is_export(path.parent):
            return resolve_weights(path.parent, trust_foreign)
        return Weights(_state_dict_file(path, trust_foreign), None, path)
    if is_export(path):
        cfg = model_config_from_dict(json.loads((path / CONFIG).read_text()), str(path / CONFIG))
        return Weights(load_safetensors_file(path / WEIGHTS), cfg, path)
    from .consolidate import checkpoint_info, consolidated_state_dict, resolve_checkpoint

    try:
        tag_dir = resolve_checkpoint(path)
    except WeightsFileError as exc:
        raise PretrainedError(
            f"{path} is neither an export ({WEIGHTS} + {CONFIG} with our model config) nor a run or checkpoint of "
            f"ours: {exc}"
        ) from exc
    state = consolidated_state_dict(tag_dir, trust_foreign)
    try:
        info = checkpoint_info(tag_dir, trust_foreign)
    except CheckpointError:  # a trusted foreign checkpoint without our trainer state: no config recorded
        return Weights(state, None, tag_dir)
    saved = info.get("config")
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
        raise PretrainedError(f"{tag_dir}: its checkpoint state records no model config")
    return Weights(state, model_config_from_dict(saved["model"], str(tag_dir)), tag_dir)


def _state_dict_file(path: Path, trust_foreign: bool) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_safetensors_file(path)
    if not trust_foreign:
        raise PretrainedError(
            f"{path}: a pickled file without a manifest of ours; refused (not a byte of it was unpickled). Pass "
            f"--trust-foreign if you trust where it comes from: it then loads weights-only"
        )
    state = load_torch_file(path, legacy=True)  # trusted: an older version's files may hold numpy RNG states
    for key in ("module", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise PretrainedError(f"{path}: expected a state dict (names -> tensors), found {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_pretrained_state(path: str | Path, trust_foreign: bool = False) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """(fp32 state dict, model config) of an export, or of a run/checkpoint directory of ours (`resolve_weights`)."""
    weights = resolve_weights(path, trust_foreign)
    if weights.cfg is None:
        raise PretrainedError(
            f"{weights.source}: records no model config (a bare state dict or a foreign checkpoint); expected an "
            f"export, a run directory or a checkpoint of ours"
        )
    return weights.state, weights.cfg


def from_pretrained(
    path: str | Path, with_heads: bool = True, trust_foreign: bool = False
) -> VLBertForPretraining | VLBertModel:
    """The model saved in `path` (an export, a run directory or a checkpoint), in eval mode, on the CPU:
    VLBertForPretraining, or the bare VLBertModel with `with_heads=False`. `trust_foreign`: also a checkpoint without
    a manifest of ours (still weights-only)."""
    state, cfg = load_pretrained_state(path, trust_foreign)
    model = VLBertForPretraining(cfg)
    check_state_dict(state, model.state_dict(), f"weights in {path}")
    model.load_state_dict(state)
    model.eval()
    return model if with_heads else model.vlbert


HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def looks_like_hf_bert(path: Path) -> bool:
    """A directory of Hugging Face weights that is not one of our exports."""
    return path.is_dir() and any((path / f).is_file() for f in HF_WEIGHTS) and not is_export(path)


def init_weights_from(model: VLBertForPretraining, path: str | Path, trust_foreign: bool = False) -> str:
    """Loads weights only into `model` (engine.init_from): an export, a run or checkpoint of ours, or a Hugging Face
    BERT directory. Returns a report for the log."""
    from .hf_bert import load_hf_bert

    path = Path(path)
    if not path.exists():
        raise PretrainedError(f"engine.init_from={path}: no such file or directory")
    if looks_like_hf_bert(path):
        return f"initialised from BERT weights in {path}\n{load_hf_bert(model, path)}"
    state, _ = load_pretrained_state(path, trust_foreign)
    check_state_dict(state, model.state_dict(), f"weights in {path}")
    model.load_state_dict(state)
    return f"initialised from {path}: {len(state)} tensors (weights only)"
