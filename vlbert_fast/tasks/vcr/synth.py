"""Synthetic VCR: questions about scenes of the synthetic world, written in VCR's exact files, read by the same
readers as the real data set.

Scenes are the world's (data/synth/scene.py: 2..synth_max_objects coloured shapes of distinct colours and shapes),
rendered and detected as the world does them, with region features from the world's extractor (one fixed extractor
for every world, so a model pretrained on the world reads these features as it learnt to). Detections are the
VCR "objects": circles and diamonds play the "person" class (so they get gender-neutral names in the text and the
text alone does not say which shape is meant), squares and triangles keep their shape as class name.

One question per image, about one object t, referred to by its index:
- colour: "what colour is [t] ."  answers "it is <colour>" (the right one and three others: for half the questions
  the other objects' colours first, so that only the reference decides, for the other half colours absent from
  the image); rationales "[t] looks <colour of t>" against "[j] looks <colour of t>" for the other objects j and
  "[t] looks <another colour>";
- shape: "what shape is [t] ."  answers "it is a <shape>" (the 4 shapes); rationales "[t] is a <shape of t>"
  against "[j] is a <shape of t>" and "[t] is a <another shape>".
Every wrong choice is false of the image; choices are shuffled, so the right index is uniform.

Layout (under the cache, keyed like `cached_world` by every value that changes the files):
  train.jsonl, val.jsonl, test.jsonl (no labels)   VCR annotation lines
  vcr1images/synth/<id>.png, <id>.json              images and metadata (boxes with scores, polygons, size, names)
  features/                                         feature shards keyed by img_fn (rows in metadata box order)
  tokenizer/                                        the world's WordPiece vocabulary (the pretrained model's)
  vcr.json                                          the settings and counts
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ...config import SynthConfig
from ...config.tasks import VCROptions
from ...data.formats import RegionRecord, convert_to_shards
from ...data.formats.shard_layout import FORMAT_VERSION as SHARD_FORMAT_VERSION
from ...data.synth.directories import cached_directory, write_new_directory
from ...data.synth.extractor import RegionExtractor
from ...data.synth.scene import COLOURS, NUM_CLASSES, SHAPES, SceneObject, class_id, render, sample_scene
from ...data.synth.world import cached_world, default_cache_dir, detections

GENERATOR_VERSION = 1
"""Part of the cache key: bump it whenever a change here changes the files."""
PERSON_SHAPES = ("circle", "diamond")
SEED_SALT = 8  # the issue number: VCR's scenes are drawn from their own stream, not the pretraining images'
CIRCLE_POINTS = 16
HARD_COLOUR_SHARE = 0.5


def object_class(obj: SceneObject) -> str:
    return "person" if obj.shape in PERSON_SHAPES else obj.shape


def polygon(obj: SceneObject) -> list[list[float]]:
    """The drawn shape's outline in image pixels (scene.render draws these)."""
    x1, y1, x2, y2 = (float(v) for v in obj.box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if obj.shape == "square":
        return [[x1, y1], [x2 + 1, y1], [x2 + 1, y2 + 1], [x1, y2 + 1]]
    if obj.shape == "triangle":
        return [[cx + 0.5, y1], [x2 + 1, y2 + 1], [x1, y2 + 1]]
    if obj.shape == "diamond":
        return [[cx + 0.5, y1], [x2 + 1, cy + 0.5], [cx + 0.5, y2 + 1], [x1, cy + 0.5]]
    rx, ry = (x2 - x1 + 1) / 2, (y2 - y1 + 1) / 2
    angles = [2 * math.pi * k / CIRCLE_POINTS for k in range(CIRCLE_POINTS)]
    return [[round(cx + 0.5 + rx * math.cos(a), 2), round(cy + 0.5 + ry * math.sin(a), 2)] for a in angles]


def _choices(right: list, wrong: list, rng: np.random.Generator) -> tuple[list, int]:
    """The right choice and the first three wrong ones, shuffled; returns (choices, index of the right one)."""
    options = [right, *wrong[:3]]
    order = rng.permutation(4)
    return [options[i] for i in order], int(np.flatnonzero(order == 0)[0])


def question(objects: list[SceneObject], rng: np.random.Generator) -> dict:
    """One VCR question about the scene (module docstring): question, answer and rationale choices and labels."""
    t = int(rng.integers(len(objects)))
    target, others = objects[t], [j for j in range(len(objects)) if j != t]
    if rng.random() < 0.5:
        colour = target.colour
        # half the questions offer the other objects' colours first among the wrong answers (then only the
        # reference tells the right one), half colours absent from the image (then seeing the colour is enough)
        present = [objects[j].colour for j in others]
        absent = [c for c in rng.permutation(list(COLOURS)).tolist() if c != colour and c not in present]
        seen = present + absent if rng.random() < HARD_COLOUR_SHARE else absent + present
        answers, a_label = _choices(["it", "is", colour], [["it", "is", c] for c in seen], rng)
        other_colours = [c for c in rng.permutation(list(COLOURS)).tolist() if c != colour]
        wrong = [[[j], "looks", colour] for j in others] + [[[t], "looks", c] for c in other_colours]
        rationales, r_label = _choices([[t], "looks", colour], wrong, rng)
        q = ["what", "colour", "is", [t], "."]
    else:
        shape = target.shape
        wrong_shapes = [s for s in rng.permutation(list(SHAPES)).tolist() if s != shape]
        answers, a_label = _choices(["it", "is", "a", shape], [["it", "is", "a", s] for s in wrong_shapes], rng)
        wrong = [[[j], "is", "a", shape] for j in others] + [[[t], "is", "a", s] for s in wrong_shapes]
        rationales, r_label = _choices([[t], "is", "a", shape], wrong, rng)
        q = ["what", "shape", "is", [t], "."]
    return {
        "question": q,
        "answer_choices": answers,
        "answer_label": a_label,
        "rationale_choices": rationales,
        "rationale_label": r_label,
    }


def _scene(rng: np.random.Generator, size: int, max_objects: int) -> list[SceneObject]:
    while True:  # at least two objects, so that a reference has to pick one
        objects = sample_scene(rng, size, max_objects)
        if len(objects) >= 2:
            return objects


def generate_vcr(world: SynthConfig, options: VCROptions, out: str | os.PathLike, tokenizer: Path) -> Path:
    """Writes the synthetic VCR into the new directory `out` (module docstring) with a copy of the `tokenizer`
    directory; returns it."""
    return write_new_directory(out, "the synthetic VCR", lambda root: _write(world, options, root, tokenizer))


def _write(world: SynthConfig, options: VCROptions, root: Path, tokenizer: Path) -> None:
    shutil.copytree(tokenizer, root / "tokenizer")
    rng = np.random.default_rng([world.seed, SEED_SALT])
    extractor = RegionExtractor(world.feature_dim)
    size = world.image_size
    (root / "vcr1images" / "synth").mkdir(parents=True)
    records: list[RegionRecord] = []
    splits = {"train": options.synth_train, "val": options.synth_val, "test": options.synth_test}
    for split, count in splits.items():
        lines = []
        for k in range(count):
            image_id = f"{split}-{k:05d}"
            objects = _scene(rng, size, options.synth_max_objects)
            picture = render(objects, size, rng)
            boxes, classes = detections(objects, size, rng)
            # detections come sorted by confidence; the argmax class names the (colour, shape), unique in a scene
            by_class = {class_id(o.colour, o.shape): o for o in objects}
            ordered = [by_class[int(np.argmax(c))] for c in classes]
            img_fn, metadata_fn = f"synth/{image_id}.png", f"synth/{image_id}.json"
            picture.save(root / "vcr1images" / img_fn, format="PNG")
            names = [object_class(o) for o in ordered]
            metadata = {
                "boxes": [[*map(float, b), float(c.max())] for b, c in zip(boxes, classes, strict=True)],
                "segms": [[polygon(o)] for o in ordered],
                "width": size,
                "height": size,
                "names": names,
            }
            (root / "vcr1images" / metadata_fn).write_text(json.dumps(metadata) + "\n")
            records.append(
                RegionRecord(img_fn, size, size, boxes, extractor(np.asarray(picture), boxes), classes, None)
            )
            line = {
                "movie": "synth",
                "objects": names,
                "img_fn": img_fn,
                "metadata_fn": metadata_fn,
                **question(ordered, rng),
                "img_id": image_id,
                "question_number": 0,
                "annot_id": f"{split}-{k}",
            }
            if split == "test":
                del line["answer_label"], line["rationale_label"]
            lines.append(json.dumps(line))
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    convert_to_shards(
        records,
        root / "features",
        feature_dim=world.feature_dim,
        num_classes=NUM_CLASSES,
        max_boxes=options.synth_max_objects,
        dtype="float32",
    )
    settings = {"generator_version": GENERATOR_VERSION, "world": asdict(world), "counts": splits}
    settings["synth_max_objects"] = options.synth_max_objects
    (root / "vcr.json").write_text(json.dumps(settings, indent=2) + "\n")


def cached_vcr(world: SynthConfig, options: VCROptions, cache_dir: str | os.PathLike | None = None) -> Path:
    """The synthetic VCR for these settings under the cache directory, generated on first use (with the world, for
    its tokenizer, when that is missing too)."""
    values = {**asdict(world), "objects": options.synth_max_objects, "train": options.synth_train}
    values.update({"val": options.synth_val, "test": options.synth_test})
    key = f"v{GENERATOR_VERSION}-shards{SHARD_FORMAT_VERSION}-" + "-".join(f"{k}{v}" for k, v in values.items())
    path = Path(cache_dir or default_cache_dir()) / "synth_vcr" / key
    return cached_directory(
        path,
        "vcr.json",
        "the synthetic VCR",
        lambda root: _write(world, options, root, cached_world(world, cache_dir) / "tokenizer"),
    )
