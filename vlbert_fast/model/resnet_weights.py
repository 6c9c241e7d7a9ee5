"""Load ResNet weights into the visual branch from the checkpoints users have, with a report.

Sources: a file (.pth / .pt / .bin through torch.load with weights_only, or .safetensors) or a state dict. A file
holding a dict under "model", "state_dict" or "module" (Detectron2, maskrcnn-benchmark, DeepSpeed) is unwrapped.
Names map onto ours (torchvision's, model/backbone.py):
- torchvision: `conv1.weight`, `bn1.*`, `layer{1-4}.{b}.{conv,bn}{k}.*`, `...downsample.{0,1}.*` - as is;
- Detectron2: `stem.conv1.weight`, `stem.conv1.norm.*`, `res{2-5}.{b}.conv{k}.weight`, `...conv{k}.norm.*`,
  `...shortcut.weight`, `...shortcut.norm.*` -> conv1, bn1, layer{1-4}, bn{k}, downsample.{0,1};
- maskrcnn-benchmark: `stem.conv1.*`, `stem.bn1.*` -> conv1, bn1; its layers are torchvision's;
- ours: the `visual.` part of a VL-BERT checkpoint (`vlbert.visual.layer1...`), e.g. after e2e pretraining.
Any prefix before those names (`backbone.`, `backbone.body.`, `roi_heads.res5` -> `res5`, `module.`, ...) is ignored.

Rules: a tensor whose shape differs from ours is an error (all such listed); a parameter or BatchNorm scale/shift
we have and the source lacks is an error (the network would run half random); missing BatchNorm running statistics
are reported (Caffe conversions fold them into the scale and shift; ours stay mean 0, variance 1); source tensors we
do not use (the classifier `fc`, detector heads, `num_batches_tracked`) are reported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

_STATS = ("running_mean", "running_var", "num_batches_tracked")
# The first name of a ResNet part inside a longer key, after any wrapper prefix.
_START = re.compile(r"(?:^|\.)(conv1\.|bn1\.|stem\.|layer[1-4]\.|res[2-5]\.)")
_D2_STAGE = re.compile(r"^res([2-5])\.")
_D2_NORM = re.compile(r"\.conv([1-3])\.norm\.")


class ResNetLoadError(RuntimeError):
    """Weights that cannot load: unreadable file, nothing recognised, a shape mismatch, or missing tensors."""


@dataclass
class ResNetLoadReport:
    source: str
    naming: str
    """Which naming the source used: torchvision, detectron2, maskrcnn-benchmark or vlbert_fast."""
    loaded: list[str] = field(default_factory=list)
    """Our tensors that received source values."""
    missing_statistics: list[str] = field(default_factory=list)
    """BatchNorm running statistics the source lacks (they stay at mean 0, variance 1)."""
    unused: list[str] = field(default_factory=list)
    """Source tensors we did not use (classifier, detector heads, counters, parts our depth does not have); from a
    VL-BERT checkpoint, its visual.* tensors only."""

    def __str__(self) -> str:
        lines = [
            f"ResNet weights from {self.source} ({self.naming} names): loaded {len(self.loaded)} tensors",
            f"  BatchNorm statistics not in the source (mean 0, variance 1): {len(self.missing_statistics)}",
            *(f"    {name}" for name in self.missing_statistics[:20]),
            f"  source tensors not used: {len(self.unused)}",
            *(f"    {name}" for name in self.unused[:20]),
        ]
        for group, shown in ((self.missing_statistics, 20), (self.unused, 20)):
            if len(group) > shown:
                lines.append(f"    ... ({len(group) - shown} more)")
        return "\n".join(lines)


def read_weights(source: str | Path) -> dict[str, torch.Tensor]:
    path = Path(source)
    if not path.is_file():
        raise ResNetLoadError(f"ResNet weights {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load and safetensors raise many types for a corrupt or foreign file
        raise ResNetLoadError(
            f"ResNet weights {path}: cannot read ({type(exc).__name__}: {exc}); expected a torch state dict "
            f"(.pth/.pt/.bin) or .safetensors (Detectron2 .pkl files: load and torch.save their 'model' dict first)"
        ) from None
    return _unwrap(obj, str(path))


def _unwrap(obj: object, source: str) -> dict[str, torch.Tensor]:
    for key in ("model", "state_dict", "module"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping):
        raise ResNetLoadError(f"ResNet weights {source}: expected a state dict (name -> tensor), found {type(obj)}")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def canonical_name(key: str, only_visual: bool) -> str | None:
    """Our (torchvision) name for a source key, or None when it is not a ResNet part."""
    if only_visual:
        at = re.search(r"(?:^|\.)visual\.", key)
        if at is None:
            return None
        key = key[at.end() :]
    match = _START.search(key)
    if match is None:
        return None
    name = key[match.start(1) :]
    if name.startswith("stem."):
        name = name[len("stem.") :].replace("conv1.norm.", "bn1.")  # Detectron2 stem.conv1.norm, mrcnn stem.bn1
    stage = _D2_STAGE.match(name)
    if stage:
        name = f"layer{int(stage.group(1)) - 1}." + name[stage.end() :]
        name = _D2_NORM.sub(lambda m: f".bn{m.group(1)}.", name)
        name = name.replace(".shortcut.norm.", ".downsample.1.").replace(".shortcut.", ".downsample.0.")
    return name


def _naming(keys: list[str], only_visual: bool) -> str:
    if only_visual:
        return "vlbert_fast"
    if any(re.search(r"(?:^|\.)res[2-5]\.", k) for k in keys):
        return "detectron2"
    if any(re.search(r"(?:^|\.)stem\.", k) for k in keys):
        return "maskrcnn-benchmark"
    return "torchvision"


def load_resnet_weights(branch: nn.Module, source: str | Path | Mapping[str, torch.Tensor]) -> ResNetLoadReport:
    """Copies the source's ResNet tensors into `branch` (a VisualBranch) by name; returns the report or raises
    ResNetLoadError (module docstring)."""
    if isinstance(source, Mapping):
        weights, where = _unwrap(source, "<state dict>"), "<state dict>"
    else:
        weights, where = read_weights(source), str(source)
    only_visual = any(re.search(r"(?:^|\.)visual\.", k) for k in weights)
    ours = branch.state_dict()
    report = ResNetLoadReport(where, _naming(list(weights), only_visual))
    mapped: dict[str, tuple[str, torch.Tensor]] = {}
    for key, value in weights.items():
        name = canonical_name(key, only_visual)
        if name is None and only_visual:
            continue  # the rest of a VL-BERT checkpoint (transformer, heads) is no ResNet part
        if name is None or name not in ours:
            report.unused.append(key)
            continue
        if name in mapped:
            raise ResNetLoadError(f"ResNet weights {where}: both {mapped[name][0]!r} and {key!r} map to {name!r}")
        mapped[name] = (key, value)
    if not mapped:
        raise ResNetLoadError(
            f"ResNet weights {where}: no tensor is a ResNet part under torchvision, Detectron2 or maskrcnn-benchmark "
            f"names (first keys: {list(weights)[:5]})"
        )
    wrong = [
        f"{key} {tuple(value.shape)} -> {name} {tuple(ours[name].shape)}"
        for name, (key, value) in mapped.items()
        if value.shape != ours[name].shape
    ]
    if wrong:
        more = f"\n  ... ({len(wrong) - 12} more)" if len(wrong) > 12 else ""
        raise ResNetLoadError(
            f"ResNet weights {where}: {len(wrong)} shapes differ from this model's (depth, width, stride_in_1x1?):\n  "
            + "\n  ".join(wrong[:12])
            + more
        )
    absent = [name for name in ours if name not in mapped]
    report.missing_statistics = [n for n in absent if n.rsplit(".", 1)[-1] in _STATS]
    needed = [n for n in absent if n.rsplit(".", 1)[-1] not in _STATS]
    if needed:
        raise ResNetLoadError(
            f"ResNet weights {where} ({report.naming} names): {len(needed)} of this model's tensors are missing, "
            f"e.g. {needed[:8]} (a different depth, or a checkpoint without res5?)"
        )
    with torch.no_grad():
        for name, (_, value) in mapped.items():
            ours[name].copy_(value.to(ours[name].dtype))
    report.loaded = sorted(mapped)
    return report
