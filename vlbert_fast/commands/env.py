"""`vlbert-fast env`: versions, devices, built extensions, and the backend each op would pick here."""

from __future__ import annotations

import importlib
import platform

import torch

from .. import _ext
from ..ops import REGISTRY
from ..version import __version__


def _version(module: str) -> str:
    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except Exception as exc:  # an optional package may fail in many ways on import; report, do not crash
        return f"not available ({type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''})"


def example_inputs() -> dict[str, tuple[tuple, dict]]:
    """Small representative inputs per op, on the default device, to ask each backend whether it would run."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {
        "box_geometry_embedding": (
            (torch.tensor([[0.0, 0.0, 9.0, 9.0]], device=device), torch.tensor([[10.0, 10.0]], device=device)),
            {},
        ),
        # (features, rois, output_size, spatial_scale, sampling_ratio, aligned, deterministic), as dispatched
        "roi_align": (
            (
                torch.zeros(1, 8, 4, 4, device=device),
                torch.tensor([[0.0, 0.0, 0.0, 32.0, 32.0]], device=device),
                (2, 2),
                1 / 16,
                1,
                False,
                False,
            ),
            {},
        ),
    }


def report() -> str:
    lines = [f"vlbert_fast {__version__}", f"python {platform.python_version()} ({platform.platform()})"]
    for module in (
        "torch",
        "triton",
        "deepspeed",
        "transformers",
        "tokenizers",
        "safetensors",
        "flash_attn",
        "apex",
        "torchvision",
    ):
        lines.append(f"  {module:<13} {_version(module)}")
    cuda = torch.cuda.is_available()
    lines.append(
        f"cuda: {'yes, ' + torch.cuda.get_device_name(0) if cuda else 'no'} (torch built with {torch.version.cuda})"
    )
    lines.append(f"vlbert_fast._C: {_ext.describe()}")
    lines.append("ops (backend that `auto` picks; why the others cannot run here):")
    inputs = example_inputs()
    for name, op in sorted(REGISTRY.items()):
        args, kwargs = inputs.get(name, ((), {}))
        reasons = op.not_supported_reasons(*args, **kwargs)
        pick = next((b for b, r in reasons.items() if not r), "none")
        lines.append(f"  {name}: auto -> {pick}")
        for backend, why in reasons.items():
            lines.append(f"    {backend:<10} {'ok' if not why else '; '.join(why)}")
    return "\n".join(lines)


HELP = "versions, devices, built extensions and the backend each op picks"
CONFIG = None


def add_arguments(parser) -> None:
    pass


def main(args, cfg=None) -> int:
    print(report())
    return 0
