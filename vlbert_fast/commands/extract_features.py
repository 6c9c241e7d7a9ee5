"""`vlbert-fast extract-features --input FILE... --out DIR`: region features of your own images and boxes, computed
by the visual branch (model.visual: ResNet C4 -> RoIAlign -> res5 -> average pool, in eval mode), written as our
feature shards (what `pretrain` reads) and/or the original's per-image region JSONs.

Each --input is, by its form:
- a Conceptual Captions `.jsonl` (or caption `.json`): each record's image, with the boxes and soft labels of the
  region JSON its `frcnn` spec points to (key: the frcnn spec, as `convert-features` and the datasets use it;
  several captions of one image are extracted once);
- a boxes `.jsonl`, or a `.json` list: objects {"image": spec, "boxes": [[x1, y1, x2, y2], ...], optional
  "image_id" (key; default: the image file's stem), "classes" ([N, C] soft labels), "image_w"/"image_h" (the frame
  the boxes are in; default: the image as decoded)};
- a bottom-up-attention `.tsv`: its boxes and sizes, with images found by `--image-pattern` (key: image_id).
Specs are relative to `--root` (default: the input's folder); `archive.zip@/member` works everywhere.

Output: DIR/index.json + shard files (`--format shards`, the default), DIR/json/<name>.json (`json`), or both.
Features are in the record's frame: boxes as given (clipped to the image), image_w/image_h of that frame, and the
whole image's feature as `image_box_feature`. Bad images and boxes (data/images.py) stop the run with a message
naming the file, or with --skip-bad are skipped and counted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from ..config import RunConfig
from ..data.formats import (
    FormatError,
    RegionRecord,
    SkipCounter,
    convert_to_shards,
    iter_bua_tsv,
    iter_cc_jsonl,
    read_bytes,
    read_region_json,
    write_region_json,
)
from ..data.formats.shard_layout import DTYPES
from ..data.images import PreparedImage, prepare_image
from .convert_features import add_soft_label_argument

HELP = "compute region features of images + boxes with the ResNet branch (into shards and/or region JSONs)"
CONFIG = RunConfig


@dataclass
class Job:
    """One image to extract."""

    key: str
    image: str
    root: Path
    boxes: np.ndarray
    """[N, 4] float32 (x1, y1, x2, y2) in the frame of `size`."""
    size: tuple[int, int] | None
    """(W, H) of the frame the boxes are in; None: the decoded image's."""
    classes: np.ndarray | None
    source: str


def _is_caption_file(path: Path) -> bool:
    with open(path, "rb") as handle:
        for raw in handle:
            if raw.strip():
                try:
                    return isinstance(first := json.loads(raw), dict) and "caption" in first
                except ValueError:
                    return False
    return False


def _box_objects(path: Path) -> Iterator[tuple[int, object]]:
    if path.suffix == ".json":
        try:
            items = json.loads(path.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(str(path), message=f"invalid JSON: {exc}", reason="invalid JSON") from None
        if not isinstance(items, list):
            raise FormatError(str(path), message="expected a JSON list of {image, boxes} objects")
        yield from enumerate(items)
        return
    with open(path, "rb") as handle:
        lines = [raw for raw in handle if raw.strip()]
    for index, raw in enumerate(lines):
        try:
            yield index, json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(str(path), index, message=f"invalid JSON: {exc}", reason="invalid JSON") from None


def _box_job(obj: object, index: int, path: Path, root: Path) -> Job:
    source = str(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("image"), str) or not obj["image"]:
        raise FormatError(source, index, "image", "an object with a non-empty 'image' path", repr(obj)[:80])
    try:
        boxes = np.asarray(obj.get("boxes"), dtype=np.float32).reshape(-1, 4)
        classes = None if obj.get("classes") is None else np.asarray(obj["classes"], dtype=np.float32)
    except (TypeError, ValueError):
        raise FormatError(source, index, "boxes", "a list of [x1, y1, x2, y2]", repr(obj.get("boxes"))[:80]) from None
    if classes is not None and (classes.ndim != 2 or classes.shape[0] != boxes.shape[0]):
        raise FormatError(source, index, "classes", f"[{boxes.shape[0]}, C] soft labels", f"shape {classes.shape}")
    if not np.isfinite(boxes).all() or ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any():
        raise FormatError(source, index, "boxes", "finite boxes with x2 >= x1 and y2 >= y1", boxes.tolist()[:4])
    size = None
    if "image_w" in obj or "image_h" in obj:
        w, h = obj.get("image_w"), obj.get("image_h")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (w, h)):
            raise FormatError(source, index, "image_w/image_h", "two positive integers", f"{w!r}, {h!r}")
        size = (w, h)
    key = str(obj.get("image_id") or PurePosixPath(obj["image"].split("@")[-1]).stem)
    return Job(key, obj["image"], root, boxes, size, classes, f"{source}, record {index}")


def iter_jobs(path: Path, root: Path | None, pattern: str, counter: SkipCounter, stats: dict) -> Iterator[Job]:
    """The images of one --input (module docstring); malformed records go to the counter."""
    root = root or path.parent
    if not path.is_file():
        raise FormatError(str(path), message="no such file")
    if path.suffix == ".tsv":
        for region in iter_bua_tsv(path, counter):
            yield Job(
                region.image_id,
                pattern.format(image_id=region.image_id),
                root,
                region.boxes,
                (region.image_w, region.image_h),
                region.classes,
                f"{path}, image {region.image_id}",
            )
    elif path.suffix in (".jsonl", ".json") and _is_caption_file(path):
        seen: set[str] = set()
        for index, caption in enumerate(iter_cc_jsonl(path, counter)):
            if caption.frcnn is None:
                stats["captions_without_frcnn"] += 1
                continue
            if caption.frcnn in seen:
                continue
            seen.add(caption.frcnn)
            try:
                region = read_region_json(read_bytes(caption.frcnn, root), source=f"{root / caption.frcnn}")
            except FormatError as err:
                counter.handle(err)
                continue
            box_size = (region.image_w, region.image_h)
            yield Job(caption.frcnn, caption.image, root, region.boxes, box_size, region.classes, f"{path} #{index}")
    elif path.suffix in (".jsonl", ".json"):
        for index, obj in _box_objects(path):
            try:
                yield _box_job(obj, index, path, root)
            except FormatError as err:
                counter.handle(err)
    else:
        raise FormatError(str(path), message="unknown input kind: expected a .jsonl, .json or .tsv file")


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


def add_arguments(parser) -> None:
    parser.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="FILE",
        help="CC .jsonl, boxes .jsonl/.json, or .tsv (repeatable)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--format", choices=("shards", "json", "both"), default="shards", help="what to write")
    parser.add_argument(
        "--root", type=Path, help="folder the image and frcnn specs are relative to (default: the input's)"
    )
    parser.add_argument("--image-pattern", default="{image_id}.jpg", help="image spec of a .tsv's image_id")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    parser.add_argument("--max-boxes", type=int, default=100, help="boxes kept per image, in the input's order")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="compute precision")
    parser.add_argument("--dtype", choices=DTYPES, default="float16", help="storage of features in the shards")
    add_soft_label_argument(parser)
    parser.add_argument("--skip-bad", action="store_true", help="skip and count bad images and records")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished extraction in --out")


def main(args, cfg: RunConfig) -> int:
    from ..model.roi_head import VisualBranch

    vcfg = cfg.model.visual
    if args.batch_size < 1 or args.max_boxes < 1 or (args.soft_labels_topk or 1) < 1:
        print(
            "vlbert-fast extract-features: --batch-size, --max-boxes and --soft-labels-topk must be >= 1",
            file=sys.stderr,
        )
        return 2
    counter = SkipCounter("skip" if args.skip_bad else "raise")
    stats = {"captions_without_frcnn": 0, "json_files": 0}
    out = Path(args.out)
    json_dir = out / "json" if args.format in ("json", "both") else None
    device, dtype = torch.device(args.device), (torch.bfloat16 if args.precision == "bf16" else torch.float32)
    branch = VisualBranch(vcfg).eval().to(device, dtype)
    if branch.load_report is not None:
        print(branch.load_report)
    else:
        print("model.visual.pretrained is empty: features of a randomly initialised ResNet", file=sys.stderr)
    names: dict[str, str] = {}

    def jobs():
        for name in args.input:
            yield from iter_jobs(Path(name), args.root, args.image_pattern, counter, stats)

    def records():
        for source, record in extract(jobs(), branch, vcfg, device, dtype, args.batch_size, args.max_boxes, counter):
            if json_dir is not None:
                name = PurePosixPath(record.image_id.split("@")[-1]).stem or "image"
                if names.setdefault(name, record.image_id) != record.image_id:
                    raise FormatError(source, message=f"JSON file name {name}.json is taken by {names[name]!r}")
                json_dir.mkdir(parents=True, exist_ok=True)
                write_region_json(json_dir / f"{name}.json", record)
                stats["json_files"] += 1
            yield source, record

    try:
        if args.format == "json":
            if json_dir is not None and json_dir.exists() and any(json_dir.iterdir()) and not args.overwrite:
                raise FileExistsError(f"{json_dir} is not empty; pass --overwrite")
            result = {"records": sum(1 for _ in records())}
        else:
            result = convert_to_shards(
                records(),
                out,
                max_boxes=args.max_boxes,
                counter=counter,
                dtype=args.dtype,
                with_image_box_feature=True,
                soft_labels_topk=args.soft_labels_topk,
                overwrite=args.overwrite,
                source=", ".join(args.input),
            )
    except (FormatError, FileExistsError) as exc:
        print(f"vlbert-fast extract-features: error: {exc}", file=sys.stderr)
        if counter.total:
            print(counter.report(), file=sys.stderr)
        return 2  # unusable data (commands/exit_codes.py)
    result.update(stats)
    result["skipped"] = counter.total  # every skip: the readers' and the writer's (all go to the counter)
    print(f"extracted {result['records']} images into {out} ({args.format})")
    for key, value in result.items():
        print(f"  {key}: {value}")
    print(counter.report())
    return 0
