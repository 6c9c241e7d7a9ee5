"""The end-to-end training step with the detector in the loop, split into its parts: ResNet trunk (stem to res4),
RoIAlign, the res5 RoI head, the transformer (embeddings, encoder and pretraining heads on the appearance the head
produced), and the whole step of VLBertForPretraining in `model.visual.mode=e2e`.

    python -m benchmarks.bench_e2e_step            # GPU: VL-BERT Base + ResNet-101 C4, 600 x 1000 images, bf16
    python -m benchmarks.bench_e2e_step --smoke    # CPU: a narrow ResNet-18 and a tiny model (checks the script)

A point is the number of images I (one image-text row each, R regions per image, the original's 10-100 detections;
text of 8-24 tokens). Ops, each timed forward / backward / full (forward + backward; parameters receive gradients,
as in training, and the frozen stages none):
- e2e_trunk: conv1..res4 on the padded images -> [I, 1024, H/16, W/16];
- e2e_roi_align: RoIAlign 14 x 14 at 1/16 of the trunk's maps (ours: `roi_align` with `backend=auto`);
- e2e_res5_head: res5 (dilated) + average pooling on the pooled regions -> [K, 2048];
- e2e_transformer: VLBertForPretraining on the same rows with that appearance given as precomputed features;
- e2e_step: the whole e2e model (the sum of the parts plus the glue between them).
The shares of the parts in e2e_step say where an end-to-end step's time goes. Providers: "ours" (model.kernels and
the RoIAlign backend on auto) and "reference" (plain PyTorch everywhere, the RoIAlign reference included).
"""

from __future__ import annotations

import dataclasses

import torch

from vlbert_fast.config import ModelConfig, VisualConfig
from vlbert_fast.data.collate import collate
from vlbert_fast.data.random import random_example
from vlbert_fast.model import VLBertForPretraining

from . import harness
from .bench_step import model_config

PROVIDERS = ("ours", "reference")
OPS = ("e2e_trunk", "e2e_roi_align", "e2e_res5_head", "e2e_transformer", "e2e_step")
FULL = {"size": "base", "images": (8, 16, 32), "regions": 36, "image": (600, 1000), "dtype": "bfloat16"}
SMOKE = {"size": "smoke", "images": (2,), "regions": 3, "image": (64, 96), "dtype": "float32"}
SMOKE_VISUAL = VisualConfig(mode="e2e", depth=18, width=4, pooled_size=5, res5_dilated=False, channels_last=False)


def e2e_config(sweep: dict, provider: str) -> ModelConfig:
    kernels = "auto" if provider == "ours" else "reference"
    cfg = model_config(sweep["size"])
    visual = SMOKE_VISUAL if sweep["size"] == "smoke" else VisualConfig(mode="e2e")
    visual = dataclasses.replace(visual, roi_align_backend=kernels)
    return dataclasses.replace(cfg, visual=visual, visual_feature_dim=visual.out_channels, kernels=kernels)


def e2e_batch(cfg: ModelConfig, images: int, regions: int, hw: tuple[int, int], seed: int = 0):
    """`images` image-text rows, each with its own random image and `regions` boxes (+ the whole image)."""
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    examples = []
    for _ in range(images):
        ex = random_example(cfg, g, text_len=(8, 24), num_regions=(regions + 1,) * 2, text_only=0.0, image_wh=(w, h))
        ex.region_features = None
        ex.image = torch.randn(3, h, w, generator=g)
        examples.append(ex)
    return collate(examples)


def workloads(cfg: ModelConfig, batch, device: torch.device, dtype: torch.dtype) -> dict[str, harness.Workload]:
    torch.manual_seed(0)
    model = VLBertForPretraining(cfg).to(device, dtype).train()
    visual = model.vlbert.visual
    params = [p for p in model.parameters() if p.requires_grad]
    visual_params = [p for p in visual.parameters() if p.requires_grad]
    batch = batch.to(device, dtype=dtype)
    with torch.no_grad():
        fmap = visual.trunk(batch.images)
        pooled = visual.pool(fmap, batch.boxes, batch.region_image)
        appearance = visual.head(pooled)
    fmap_in, pooled_in = fmap.clone().requires_grad_(), pooled.clone().requires_grad_()
    # The transformer alone: the same weights in precomputed mode, fed the appearance the head produced.
    text_cfg = dataclasses.replace(cfg, visual=dataclasses.replace(cfg.visual, mode="precomputed"))
    text_model = VLBertForPretraining(text_cfg).to(device, dtype).train()
    text_model.load_state_dict(model.state_dict(), strict=False)
    text_batch = dataclasses.replace(batch, region_features=appearance, images=None)
    text_params = [p for p in text_model.parameters() if p.requires_grad]
    return {
        "e2e_trunk": harness.Workload(lambda: visual.trunk(batch.images), visual_params),
        "e2e_roi_align": harness.Workload(lambda: visual.pool(fmap_in, batch.boxes, batch.region_image), [fmap_in]),
        "e2e_res5_head": harness.Workload(lambda: visual.head(pooled_in), [pooled_in]),
        "e2e_transformer": harness.Workload(lambda: text_model(text_batch).loss, text_params),
        "e2e_step": harness.Workload(lambda: model(batch).loss, params),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__.splitlines()[0], PROVIDERS)
    args = p.parse_args(argv)
    providers, modes, device, results = harness.resolve(args, PROVIDERS)
    sweep = SMOKE if args.smoke or device.type != "cuda" else FULL
    dtype = getattr(torch, sweep["dtype"])
    writer = harness.ResultWriter(results, "e2e_step", device)
    for images in sweep["images"]:
        for provider in providers:
            cfg = e2e_config(sweep, provider)
            batch = e2e_batch(cfg, images, sweep["regions"], sweep["image"])
            config = {"size": sweep["size"], "dtype": sweep["dtype"], "regions_per_image": sweep["regions"],
                      "image": list(sweep["image"]), "depth": cfg.visual.depth}  # fmt: skip
            built = workloads(cfg, batch, device, dtype)
            for op in OPS:
                harness.run_workload(
                    writer, op, provider, lambda w=built[op]: w, "images", images, config, modes, device, args.rep_ms
                )
    print(f"{writer.rows_written} rows appended to {writer.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
