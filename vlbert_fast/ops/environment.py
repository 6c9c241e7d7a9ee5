"""What this machine has and what each op would run on it (`vlbert-fast env`): versions, the CUDA device, the built
extension, how Triton kernels run here, and the backend `auto` picks per op with the reasons the others cannot run."""

from __future__ import annotations

import importlib
import importlib.util
import platform

import torch

from .. import _ext
from ..version import __version__
from ..vocabulary import TokenKind
from . import REGISTRY, EmbeddingWeights
from .dispatch import interpreter_on


def _version(module: str) -> str:
    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except Exception as exc:  # an optional package may fail in many ways on import; report, do not crash
        return f"not available ({type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''})"


def example_inputs() -> dict[str, tuple[tuple, dict]]:
    """Small representative inputs per op, on the default device, to ask each backend whether it would run."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32  # what training runs in
    h = 64
    table = lambda rows: torch.zeros(rows, h, dtype=dtype, device=device)  # noqa: E731
    vector = lambda: torch.zeros(h, dtype=dtype, device=device)  # noqa: E731
    ids = torch.zeros(4, dtype=torch.long, device=device)
    kinds = torch.tensor([TokenKind.TEXT, TokenKind.ROI, TokenKind.END, TokenKind.PAD], device=device)
    weights = EmbeddingWeights(table(8), table(8), table(3), *(vector() for _ in range(10)))
    visual_index = torch.tensor([0, 0, -1, -1], device=device)
    region_masked = torch.zeros(1, dtype=torch.bool, device=device)
    rows = torch.zeros(4, h, dtype=dtype, device=device)
    qkv = torch.zeros(4, 2, 64, dtype=dtype, device=device)  # BERT's head dim
    cu_seqlens = torch.tensor([0, 3, 4], dtype=torch.int32, device=device)
    return {
        "varlen_attention": ((qkv, qkv, qkv, cu_seqlens, 3), {}),
        "varlen_attention_packed": ((torch.stack([qkv, qkv, qkv], 1), cu_seqlens, 3), {}),
        "bias_dropout_residual_layer_norm": ((rows, vector(), rows, vector(), vector()), {}),
        "bias_gelu": ((rows, vector()), {}),
        "linear_cross_entropy": ((rows, table(8), torch.zeros(8, dtype=dtype, device=device), ids), {}),
        "box_geometry_embedding": (
            (torch.tensor([[0.0, 0.0, 9.0, 9.0]], device=device), torch.tensor([[10.0, 10.0]], device=device)),
            {},
        ),
        "fused_embedding": ((ids, ids, ids, kinds, visual_index, table(1), region_masked, weights), {}),
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


def extensions() -> list[str]:
    """Built extensions and kernel modes: the csrc extension, and how Triton kernels would run here."""
    triton = (
        "CUDA" if torch.cuda.is_available() else ("interpreter (TRITON_INTERPRET=1)" if interpreter_on() else "no GPU")
    )
    return [f"  vlbert_fast._C (csrc) {_ext.describe()}", f"  triton kernels        {triton}"]


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
    lines.append("extensions:")
    lines.extend(extensions())
    lines.append("ops (backend that `auto` picks; why the others cannot run here):")
    inputs = example_inputs()
    for name, op in sorted(REGISTRY.items()):
        args, kwargs = inputs.get(name, ((), {}))
        reasons = op.not_supported_reasons(*args, **kwargs)
        try:
            pick = op.select("auto", *args, **kwargs).name
        except Exception as exc:  # no backend runs the example: say so, and why, below
            pick = f"none ({type(exc).__name__})"
        lines.append(f"  {name}: auto -> {pick}")
        for backend, why in reasons.items():
            skip = op.backends[backend].skip_reasons(*args, **kwargs) if not why else []
            state = "; ".join(why) if why else ("ok, but auto passes over it: " + "; ".join(skip) if skip else "ok")
            lines.append(f"    {backend:<10} {state}")
    return "\n".join(lines)
