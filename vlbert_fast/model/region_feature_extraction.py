"""Region features of images and boxes computed by the visual branch (model.visual: ResNet C4 -> RoIAlign -> res5 ->
average pool, in eval mode), written as our feature shards and/or the original's per-image region JSONs
(`vlbert-fast extract-features`; the inputs: data/formats/image_box_inputs.py).

Features are in the record's frame: boxes as given (clipped to the image), image_w/image_h of that frame, and the
whole image's feature as `image_box_feature`. Bad images and boxes (data/images.py) go to the SkipCounter.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from ..config import VisualConfig
from ..data.formats import FormatError, RegionRecord, SkipCounter, convert_to_shards, read_bytes, write_region_json
from ..data.formats.image_box_inputs import Job, iter_jobs
from ..data.images import PreparedImage, prepare_image
from .visual_branch import VisualBranch


@torch.no_grad()
def _features(branch, batch: list[tuple[Job, PreparedImage]], device, dtype) -> list[np.ndarray]:
    """[1 + N, D] float32 per image: the whole image's feature, then each box's."""
    height = max(p.pixels.shape[1] for _, p in batch)
    width = max(p.pixels.shape[2] for _, p in batch)
    images = torch.zeros(len(batch), 3, height, width)
    boxes, owner = [], []
    for i, (_, p) in enumerate(batch):
        images[i, :, : p.pixels.shape[1], : p.pixels.shape[2]] = p.pixels
        w, h = p.size
        boxes.append(torch.cat([torch.tensor([[0.0, 0.0, w - 1.0, h - 1.0]]), torch.from_numpy(p.boxes)]))
        owner.append(torch.full((1 + len(p.boxes),), i, dtype=torch.long))
    out = branch(images.to(device, dtype), torch.cat(boxes).to(device), torch.cat(owner).to(device))
    return [chunk.numpy() for chunk in out.float().cpu().split([1 + len(p.boxes) for _, p in batch])]


def extract(jobs, branch, vcfg, device, dtype, batch_size: int, max_boxes: int, counter: SkipCounter):
    """(source, RegionRecord) per image whose features were computed; bad images go to the counter."""
    pending: list[tuple[Job, PreparedImage]] = []

    def flush():
        for (job, prepared), feats in zip(pending, _features(branch, pending, device, dtype), strict=True):
            w, h = job.size or prepared.decoded_size
            n = len(prepared.boxes)
            boxes = np.clip(job.boxes[:n], 0.0, [w - 1, h - 1, w - 1, h - 1]).astype(np.float32)
            classes = None if job.classes is None else job.classes[:n].astype(np.float32)
            yield job.source, RegionRecord(job.key, int(w), int(h), boxes, feats[1:], classes, feats[0])
        pending.clear()

    for job in jobs:
        try:
            data = read_bytes(job.image, job.root)
            prepared = prepare_image(data, f"{job.root / job.image}", vcfg, job.size, job.boxes[:max_boxes])
        except FormatError as err:
            counter.handle(FormatError(job.source, message=str(err), reason=err.reason))
            continue
        pending.append((job, prepared))
        if len(pending) == batch_size:
            yield from flush()
    if pending:
        yield from flush()


def extract_features(
    inputs: Sequence[str],
    out: Path,
    vcfg: VisualConfig,
    counter: SkipCounter,
    *,
    write: str = "shards",
    root: Path | None = None,
    image_pattern: str = "{image_id}.jpg",
    batch_size: int = 8,
    max_boxes: int = 100,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    dtype: str = "float16",
    soft_labels_topk: int | None = None,
    overwrite: bool = False,
    log=print,
) -> dict:
    """Extracts every input's images into `out`: shards (`write="shards"`), DIR/json/<name>.json (`"json"`) or both;
    returns the counts. `log` receives the branch's weight report."""
    device = torch.device(device)
    compute = torch.bfloat16 if precision == "bf16" else torch.float32
    branch = VisualBranch(vcfg).eval().to(device, compute)
    log(branch.load_report or "model.visual.pretrained is empty: features of a randomly initialised ResNet")
    stats = {"captions_without_frcnn": 0, "json_files": 0}
    json_dir = out / "json" if write in ("json", "both") else None
    names: dict[str, str] = {}

    def jobs():
        for name in inputs:
            yield from iter_jobs(Path(name), root, image_pattern, counter, stats)

    def records():
        for source, record in extract(jobs(), branch, vcfg, device, compute, batch_size, max_boxes, counter):
            if json_dir is not None:
                name = PurePosixPath(record.image_id.split("@")[-1]).stem or "image"
                if names.setdefault(name, record.image_id) != record.image_id:
                    raise FormatError(source, message=f"JSON file name {name}.json is taken by {names[name]!r}")
                json_dir.mkdir(parents=True, exist_ok=True)
                write_region_json(json_dir / f"{name}.json", record)
                stats["json_files"] += 1
            yield source, record

    if write == "json":
        if json_dir.exists() and any(json_dir.iterdir()) and not overwrite:
            raise FileExistsError(f"{json_dir} is not empty; pass --overwrite")
        result = {"records": sum(1 for _ in records())}
    else:
        result = convert_to_shards(
            records(),
            out,
            max_boxes=max_boxes,
            counter=counter,
            dtype=dtype,
            with_image_box_feature=True,
            soft_labels_topk=soft_labels_topk,
            overwrite=overwrite,
            source=", ".join(inputs),
        )
    result.update(stats)
    result["skipped"] = counter.total  # every skip: the readers' and the writer's (all go to the counter)
    return result
