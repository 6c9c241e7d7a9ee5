"""Box geometry: ours (Triton) against the plain-PyTorch reference in eager mode and under torch.compile.

    python -m benchmarks.bench_geometry            # GPU: 4k-64k boxes, geometry width 2048
    python -m benchmarks.bench_geometry --smoke    # tiny shapes; on a CPU the Triton provider needs TRITON_INTERPRET=1

Two ops:
- `box_geometry_embedding`: boxes [K, 4] fp32 (as data arrive) -> [K, 2048] fp32; forward, and backward to the
  boxes. Bytes: forward reads boxes and image sizes and writes the encoding; backward reads the output gradient,
  the boxes and sizes, and writes the box gradient.
- `visual_input`: the visual projection's input [K, Dv + Dg] in bf16 from the appearance [K, Dv] and the boxes, as
  the RegionEncoder builds it: ours writes the geometry in place next to the copied appearance; the references
  encode, then concatenate. Forward only (boxes are data). Bytes: read the appearance, boxes and sizes, write the
  buffer once (the concatenation's extra pass is what ours saves, so it is not counted).
"""

from __future__ import annotations

import functools

import torch

from vlbert_fast.ops import box_geometry_embedding, box_geometry_embedding_reference
from vlbert_fast.ops.geometry import GEOMETRY

from . import harness

PROVIDERS = ("triton", "torch", "torch_compile")
OPS = ("box_geometry_embedding", "visual_input")


def _tile(elements: int):
    """The geometry kernel's rows-per-program rule with another tile size (the launch config the loop sweeps)."""

    def tile_rows(columns: int) -> int:
        from vlbert_fast.kernels.utils import tile_rows as rule

        return rule(columns, elements)

    return tile_rows


BLOCK_CONFIGS = {
    op: [(f"tile={e}", {"vlbert_fast.kernels.geometry.tile_rows": _tile(e)}) for e in (2048, 4096, 8192)] for op in OPS
}
FULL = {"boxes": (4096, 16384, 65536), "dim": 2048, "appearance": 2048, "dtype": "bfloat16"}
SMOKE = {"boxes": (7,), "dim": 64, "appearance": 32, "dtype": "float32"}


def random_boxes(count: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor([[640.0, 480.0]]).expand(count, 2).contiguous()
    xy = torch.rand(count, 2, generator=g) * size
    wh = torch.rand(count, 2, generator=g) * size / 2
    return torch.cat([xy, torch.minimum(xy + wh, size - 1)], dim=1).to(device), size.to(device)


def encoding_workload(provider: str, boxes, size, dim: int, compiled) -> harness.Workload:
    boxes = boxes.detach().clone().requires_grad_(True)
    if provider == "triton":
        reasons = GEOMETRY.not_supported_reasons(boxes, size, dim)["triton"]
        if reasons:
            raise harness.Unavailable("; ".join(reasons))
        run = lambda: box_geometry_embedding(boxes, size, dim=dim, backend="triton")  # noqa: E731
    elif provider == "torch":
        run = lambda: box_geometry_embedding_reference(boxes, size, dim=dim)  # noqa: E731
    else:
        run = lambda: compiled(boxes, size, dim=dim)  # noqa: E731
    k = boxes.shape[0]
    box_bytes = k * (4 + 2) * 4
    moved = {"forward": box_bytes + k * dim * 4, "backward": k * dim * 4 + box_bytes + k * 4 * 4}
    moved["full"] = moved["forward"] + moved["backward"]
    return harness.Workload(run, [boxes], moved)


def _concatenated(appearance, boxes, size, dim: int) -> torch.Tensor:
    return torch.cat([appearance, box_geometry_embedding_reference(boxes, size, dim=dim).to(appearance.dtype)], -1)


def buffer_workload(provider: str, appearance, boxes, size, dim: int, compiled_cat) -> harness.Workload:
    k, dv = appearance.shape
    if provider == "triton":
        reasons = GEOMETRY.not_supported_reasons(boxes, size, dim)["triton"]
        if reasons:
            raise harness.Unavailable("; ".join(reasons))

        def run() -> torch.Tensor:
            buffer = appearance.new_empty(k, dv + dim)
            box_geometry_embedding(boxes, size, dim=dim, backend="triton", out=buffer[:, dv:])
            buffer[:, :dv] = appearance
            return buffer

    elif provider == "torch":
        run = functools.partial(_concatenated, appearance, boxes, size, dim)
    else:
        run = functools.partial(compiled_cat, appearance, boxes, size, dim)
    element = appearance.element_size()
    moved = {"forward": k * dv * element + k * (4 + 2) * 4 + k * (dv + dim) * element}
    return harness.Workload(run, [], moved)


def main(argv: list[str] | None = None) -> int:
    args = harness.parser(__doc__.splitlines()[0], PROVIDERS).parse_args(argv)
    providers, modes, device, results = harness.resolve(args, PROVIDERS)
    sweep = SMOKE if args.smoke else FULL
    writer = harness.ResultWriter(results, "geometry", device)
    compiled = torch.compile(box_geometry_embedding_reference, backend=args.compile_backend)
    compiled_cat = torch.compile(_concatenated, backend=args.compile_backend)
    dim, dv, dtype = sweep["dim"], sweep["appearance"], getattr(torch, sweep["dtype"])
    for k in sweep["boxes"]:
        boxes, size = random_boxes(k, device)
        appearance = torch.rand(k, dv, generator=torch.Generator().manual_seed(1)).to(device, dtype)
        config = {"dim": dim, "appearance": dv, "dtype": sweep["dtype"], "compile_backend": args.compile_backend}
        for provider in providers:
            make = functools.partial(encoding_workload, provider, boxes, size, dim, compiled)
            harness.run_workload(
                writer, "box_geometry_embedding", provider, make, "boxes", k, config, modes, device, args.rep_ms
            )
            if "forward" in modes:
                make = functools.partial(buffer_workload, provider, appearance, boxes, size, dim, compiled_cat)
                harness.run_workload(
                    writer, "visual_input", provider, make, "boxes", k, config, ["forward"], device, args.rep_ms
                )
    print(f"{writer.rows_written} rows appended to {writer.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
