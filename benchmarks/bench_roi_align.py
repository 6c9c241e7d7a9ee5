"""RoIAlign: ours (native CUDA, Triton) against torchvision.ops.roi_align, the plain-PyTorch reference in eager mode
and under torch.compile, at the shapes of the end-to-end visual branch.

    python -m benchmarks.bench_roi_align            # GPU: 8-32 images of 600 x 1000, C = 1024 at 1/16, bf16 NHWC
    python -m benchmarks.bench_roi_align --smoke    # tiny shapes on any device (Triton interpreted on a CPU)

A point is (images, RoIs per image): res4 maps [N, 1024, 38, 63] (a 600 x 1000 image at stride 16) in bf16
channels-last, boxes of 16-600 px (fp32) spread over the images, 14 x 14 output, sampling ratio 1, legacy
alignment: the original's C4 head. Rows carry x_name "rois" (the total K) and the point in config_json.
The goal on a GPU: forward + backward ("full") at least 3x torchvision's.

Bytes each mode must move at least (GB/s = bytes / time; the gather reads are counted once, so this is a floor):
- forward: read the feature maps once, write the [K, C, 14, 14] output;
- backward: read the output gradient, write the features' gradient (zeroed first: written twice);
- full: both.
Each point also records a plain copy of the forward's bytes (op "copy"), the bandwidth ceiling.
torchvision is a GPU-machine-only peer here (its only build for this torch is CUDA): it is imported lazily, and
where it is missing that provider is skipped with one message.
"""

from __future__ import annotations

import functools

import torch

from vlbert_fast.ops import roi_align, roi_align_reference
from vlbert_fast.ops.roi_align import ROI_ALIGN

from . import harness

PROVIDERS = ("native", "triton", "torchvision", "torch", "torch_compile")
FULL = {"points": ((8, 10), (8, 100), (16, 36), (32, 10), (32, 100)), "channels": 1024, "hw": (38, 63),
        "image": (600, 1000), "dtype": "bfloat16", "channels_last": True}  # fmt: skip
SMOKE = {"points": ((2, 3),), "channels": 5, "hw": (7, 9), "image": (112, 144), "dtype": "float32",
         "channels_last": True}  # fmt: skip
OUTPUT = (14, 14)
SCALE, SAMPLING = 1 / 16, 1


def inputs(sweep: dict, images: int, per_image: int, device: torch.device, seed: int = 0):
    """Feature maps [N, C, H, W] and rois [K, 5] (batch index, x1, y1, x2, y2) in input pixels, fp32."""
    g = torch.Generator().manual_seed(seed)
    (h, w), (ih, iw) = sweep["hw"], sweep["image"]
    features = torch.randn(images, sweep["channels"], h, w, generator=g).to(device, getattr(torch, sweep["dtype"]))
    if sweep["channels_last"]:
        features = features.contiguous(memory_format=torch.channels_last)
    k = images * per_image
    size = torch.rand(k, 2, generator=g) * (min(ih, iw) - 16) + 16
    xy = torch.rand(k, 2, generator=g) * (torch.tensor([iw, ih]) - size)
    batch = torch.arange(images).repeat_interleave(per_image).float()
    rois = torch.cat([batch[:, None], xy, xy + size], dim=1).to(device)
    return features, rois


def _torchvision_roi_align():
    try:
        from torchvision.ops import roi_align as tv_roi_align
    except Exception as exc:  # ImportError, or a CPU-only build failing to load its ops
        raise harness.Unavailable(
            f"torchvision is not importable here ({type(exc).__name__}); it is the GPU machine's peer"
        ) from None
    return tv_roi_align


def workload(provider: str, features, rois, compiled) -> harness.Workload:
    features = features.detach().clone().requires_grad_(True)
    args = (OUTPUT, SCALE, SAMPLING, False)
    if provider in ("native", "triton"):
        reasons = ROI_ALIGN.not_supported_reasons(features, rois, OUTPUT, SCALE, SAMPLING, False, False)[provider]
        if reasons:
            raise harness.Unavailable("; ".join(reasons))
        run = lambda: roi_align(features, rois, *args, backend=provider)  # noqa: E731
    elif provider == "torchvision":
        tv = _torchvision_roi_align()
        boxes = rois.to(features.dtype)  # torchvision wants boxes in the features' dtype
        run = lambda: tv(features, boxes, OUTPUT, SCALE, SAMPLING, False)  # noqa: E731
    elif provider == "torch":
        run = lambda: roi_align_reference(features, rois, *args)  # noqa: E731
    else:
        run = lambda: compiled(features, rois, *args)  # noqa: E731
    element = features.element_size()
    fmap = features.numel() * element
    out = rois.shape[0] * features.shape[1] * OUTPUT[0] * OUTPUT[1] * element
    moved = {"forward": fmap + out + rois.numel() * 4, "backward": out + 2 * fmap + rois.numel() * 4}
    moved["full"] = moved["forward"] + moved["backward"]
    return harness.Workload(run, [features], moved)


def main(argv: list[str] | None = None) -> int:
    args = harness.parser(__doc__.splitlines()[0], PROVIDERS).parse_args(argv)
    providers, modes, device, results = harness.resolve(args, PROVIDERS)
    sweep = SMOKE if args.smoke else FULL
    writer = harness.ResultWriter(results, "roi_align", device)
    compiled = torch.compile(roi_align_reference, backend=args.compile_backend)
    for images, per_image in sweep["points"]:
        features, rois = inputs(sweep, images, per_image, device)
        k = rois.shape[0]
        config = {
            "images": images,
            "rois_per_image": per_image,
            "channels": sweep["channels"],
            "feature_hw": list(sweep["hw"]),
            "dtype": sweep["dtype"],
            "channels_last": sweep["channels_last"],
            "output": list(OUTPUT),
            "sampling_ratio": SAMPLING,
            "compile_backend": args.compile_backend,
        }
        timings = {}
        for provider in providers:
            make = functools.partial(workload, provider, features, rois, compiled)
            timings[provider] = harness.run_workload(
                writer, "roi_align", provider, make, "rois", k, config, modes, device, args.rep_ms
            )
        copy_bytes = workload("torch", features, rois, compiled).bytes_moved["forward"]
        harness.run_workload(
            writer, "copy", "torch", lambda b=copy_bytes: harness.copy_workload(b, device), "rois", k, config,
            ["forward"], device, args.rep_ms,
        )  # fmt: skip
        peer = timings.get("torchvision", {})
        for provider in ("native", "triton"):
            for mode, t in timings.get(provider, {}).items():
                if mode in peer:
                    print(f"  speedup {provider} vs torchvision {mode} K={k}: {peer[mode].p50 / t.p50:.2f}x")
    print(f"{writer.rows_written} rows appended to {writer.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
