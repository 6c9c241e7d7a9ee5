"""Images and their boxes to extract region features from (`vlbert-fast extract-features`), read as `Job`s. By the
form of each input:
- a Conceptual Captions `.jsonl` (or caption `.json`): each record's image, with the boxes and soft labels of the
  region JSON its `frcnn` spec points to (key: the frcnn spec, as `convert-features` and the datasets use it;
  several captions of one image are extracted once);
- a boxes `.jsonl`, or a `.json` list: objects {"image": spec, "boxes": [[x1, y1, x2, y2], ...], optional
  "image_id" (key; default: the image file's stem), "classes" ([N, C] soft labels), "image_w"/"image_h" (the frame
  the boxes are in; default: the image as decoded)};
- a bottom-up-attention `.tsv`: its boxes and sizes, with images found by `pattern` (key: image_id).
Specs are relative to `root` (default: the input's folder); `archive.zip@/member` works everywhere. Malformed records
go to the SkipCounter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from .bua_tsv import iter_bua_tsv
from .cc_jsonl import iter_cc_jsonl
from .errors import FormatError, SkipCounter
from .paths import read_bytes
from .region_inputs import is_caption_file
from .region_json import read_region_json


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
    elif path.suffix in (".jsonl", ".json") and is_caption_file(path):
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
