"""Synthetic RefCOCO+: referring expressions over scenes of the synthetic world, in the refer toolkit's files.

Scenes are drawn, rendered and featurised by the synthetic world's own code (data/synth: sample_scene, render,
RegionExtractor with the world's feature width), so a model pretrained on the world reads these RoIs as it read
its detections. Each image holds 2-4 objects with pairwise different colours and shapes; each object is one ref
(its COCO annotation is the target) with one or two expressions that name it uniquely:

    "the red circle"   "the circle"   "the red object"   "the object left of the blue square"   "the object on the left"

Layout (what RefCOCOOptions' defaults read):
  refcoco+/refs(unc).p                                          refs, splits train / val / testA / testB
  refcoco+/instances.json                                       images, annotations (bbox [x, y, w, h]), categories
  refcoco+/proposal/res101_coco_minus_refer_notime_dets.json    detections, the original's layout: each object's box
                                                                jittered by up to 1.5 px, plus one spurious box on
                                                                the background per image
  tokenizer/                                                    the world's WordPiece vocabulary (a copy)
  features/                                                     feature shards keyed by image id: one row per
                                                                annotation box and per detection
  synth_refcoco.json                                            the settings and counts

Like unc's testA (images of people) and testB (images of other objects), testA holds the refs to circles and
squares, testB those to triangles and diamonds, each on its own held-out images. Deterministic: the same settings
give byte-identical files; `cached_refcoco` keys the cache directory by them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ...config import SynthConfig
from ...data.formats import RegionRecord, convert_to_shards
from ...data.formats.shard_layout import FORMAT_VERSION as SHARD_FORMAT_VERSION
from ...data.synth.directories import cached_directory, write_new_directory
from ...data.synth.extractor import RegionExtractor
from ...data.synth.scene import COLOURS, SHAPES, SceneObject, class_id, relation, render, sample_scene
from ...data.synth.world import cached_world, default_cache_dir
from .boxes import box_iou
from .refer import write_json, write_refs

GENERATOR_VERSION = 1
"""Part of the cache key: bump it whenever a change here changes the files."""
MAX_OBJECTS = 4
TESTA_SHAPES = ("circle", "square")
SEED_STREAM = 8  # the issue number: draws independent of the world's own, which uses the bare seed


def expressions(target: SceneObject, objects: list[SceneObject]) -> list[list[str]]:
    """Every expression (word list) of our kinds that is true of `target` and of no other object in the scene."""
    c, s = target.colour, target.shape
    out = [["the", c, s], ["the", s], ["the", c, "object"]]
    others = [o for o in objects if o is not target]
    for b in others:
        rel = relation(target, b)
        if all(relation(o, b) != rel for o in others if o is not b):
            out.append(["the", "object", *rel, "the", b.colour, b.shape])
    cx = target.centre[0]
    if all(cx + 4 < o.centre[0] for o in others):
        out.append(["the", "object", "on", "the", "left"])
    if all(cx - 4 > o.centre[0] for o in others):
        out.append(["the", "object", "on", "the", "right"])
    return out


def _scene(rng: np.random.Generator, size: int) -> list[SceneObject]:
    while True:  # 2..MAX_OBJECTS objects: one alone is nothing to refer among
        objects = sample_scene(rng, size, MAX_OBJECTS)
        if len(objects) >= 2:
            return objects


def _detections(objects: list[SceneObject], size: int, rng: np.random.Generator) -> np.ndarray:
    """[N, 4] float32: each object's box jittered, then one background box that overlaps no object much."""
    boxes = []
    for obj in objects:
        box = np.asarray(obj.box, dtype=np.float64) + rng.uniform(-1.5, 1.5, size=4)
        box = np.clip(box, 0, size - 1)
        box[2:] = np.maximum(box[2:], box[:2] + 1)
        boxes.append(box)
    truth = np.asarray([o.box for o in objects], dtype=np.float64)
    for _ in range(20):
        side = float(rng.integers(10, 17))
        x, y = rng.uniform(0, size - side - 1, size=2)
        spurious = np.array([x, y, x + side, y + side])
        if box_iou(spurious, truth).max() < 0.1:
            boxes.append(spurious)
            break
    return np.asarray(boxes, dtype=np.float32)


def _xywh(box) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)]


def generate_refcoco(
    synth: SynthConfig, train_images: int, eval_images: int, out: str | Path, tokenizer: Path | None = None
) -> Path:
    """Writes synthetic RefCOCO+ into the new directory `out` (module docstring), with a copy of the `tokenizer`
    directory (the world's) when given; returns it."""
    return write_new_directory(
        out, "synthetic RefCOCO+", lambda root: _write(synth, train_images, eval_images, root, tokenizer)
    )


def _write(synth: SynthConfig, train_images: int, eval_images: int, root: Path, tokenizer: Path | None) -> None:
    if tokenizer is not None:
        shutil.copytree(tokenizer, root / "tokenizer")
    rng = np.random.default_rng([synth.seed, SEED_STREAM])
    extractor = RegionExtractor(synth.feature_dim)
    size = synth.image_size
    splits = ["train"] * train_images + ["val"] * eval_images + ["testA"] * eval_images + ["testB"] * eval_images
    images, annotations, refs, dets, records = [], [], [], [], []
    sent_id = 0
    for i, split in enumerate(splits):
        image_id = i + 1
        objects = _scene(rng, size)
        picture = np.asarray(render(objects, size, rng))
        file_name = f"synth_{image_id:012d}.png"
        images.append({"id": image_id, "width": size, "height": size, "file_name": file_name})
        detected = _detections(objects, size, rng)
        truth = np.asarray([o.box for o in objects], dtype=np.float32)
        for k, obj in enumerate(objects):
            bbox = _xywh(obj.box)
            annotations.append(
                {
                    "id": image_id * 10 + k,
                    "image_id": image_id,
                    "bbox": bbox,
                    "category_id": class_id(obj.colour, obj.shape),
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                    "segmentation": [
                        [
                            bbox[0],
                            bbox[1],
                            bbox[0] + bbox[2],
                            bbox[1],
                            bbox[0] + bbox[2],
                            bbox[1] + bbox[3],
                            bbox[0],
                            bbox[1] + bbox[3],
                        ]
                    ],
                }
            )
            if split == "testA" and obj.shape not in TESTA_SHAPES or split == "testB" and obj.shape in TESTA_SHAPES:
                continue
            options = expressions(obj, objects)
            chosen = rng.choice(len(options), size=min(len(options), int(rng.integers(1, 3))), replace=False)
            sentences = []
            for j in chosen:
                words = options[int(j)]
                sentences.append({"tokens": words, "raw": " ".join(words), "sent": " ".join(words), "sent_id": sent_id})
                sent_id += 1
            refs.append(
                {
                    "ref_id": len(refs),
                    "ann_id": image_id * 10 + k,
                    "image_id": image_id,
                    "category_id": class_id(obj.colour, obj.shape),
                    "split": split,
                    "sentences": sentences,
                    "sent_ids": [s["sent_id"] for s in sentences],
                    "file_name": f"synth_{image_id:012d}_{k}.png",
                }
            )
        dets += [{"image_id": image_id, "box": _xywh(box), "score": 1.0} for box in detected]
        boxes = np.concatenate([truth, detected])
        record = RegionRecord(str(image_id), size, size, boxes, extractor(picture, boxes), None, None)
        records.append(record)
    categories = [{"id": class_id(c, s), "name": f"{c} {s}"} for c in COLOURS for s in SHAPES]
    (root / "refcoco+" / "proposal").mkdir(parents=True)
    write_refs(root / "refcoco+" / "refs(unc).p", refs)
    write_json(
        root / "refcoco+" / "instances.json", {"images": images, "annotations": annotations, "categories": categories}
    )
    write_json(root / "refcoco+" / "proposal" / "res101_coco_minus_refer_notime_dets.json", dets)
    convert_to_shards(records, root / "features", feature_dim=synth.feature_dim, max_boxes=2 * MAX_OBJECTS + 1)
    counts = {s: sum(r["split"] == s for r in refs) for s in ("train", "val", "testA", "testB")}
    meta = {
        "generator_version": GENERATOR_VERSION,
        "synth": asdict(synth),
        "train_images": train_images,
        "eval_images": eval_images,
        "refs": counts,
        "sentences": sent_id,
    }
    (root / "synth_refcoco.json").write_text(json.dumps(meta, indent=2) + "\n")


def cached_refcoco(
    synth: SynthConfig,
    train_images: int,
    eval_images: int,
    cache_dir: str | Path | None = None,
    with_world_tokenizer: bool = True,
) -> Path:
    """Synthetic RefCOCO+ for these settings under the cache directory, generated on first use; with the world's
    tokenizer copied in (the world is generated first if it is not cached yet)."""
    key = (
        f"v{GENERATOR_VERSION}-shards{SHARD_FORMAT_VERSION}-{'tok-' if with_world_tokenizer else ''}"
        f"train{train_images}-eval{eval_images}-" + "-".join(f"{k}{v}" for k, v in asdict(synth).items())
    )
    path = Path(cache_dir or default_cache_dir()) / "refcoco" / key

    def write(root: Path) -> None:
        tokenizer = cached_world(synth, cache_dir) / "tokenizer" if with_world_tokenizer else None
        _write(synth, train_images, eval_images, root, tokenizer)

    return cached_directory(path, "synth_refcoco.json", "synthetic RefCOCO+", write)
