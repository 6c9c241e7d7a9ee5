"""Synthetic VQA v2 from the synthetic world, in the exact official file formats (`VQAOptions.root` empty).

Each world image's objects are read back from what the world stores: its detections in the feature shards, whose
soft class labels peak at the true (colour, shape) class (data/synth/world.py `detections`). Questions about an
image, `synth_questions_per_image` of them drawn from:

- "what colour is the <shape> ?"          -> the colour of the object of that shape (6 colours)
- "what shape is the <colour> object ?"   -> the shape of the object of that colour (4 shapes)
- "how many objects are there ?"          -> the number of objects, as a digit (1..max_objects)

Each question gets 10 human answers: the right one, replaced with probability `synth_noise` by a wrong answer of
the same kind, so the soft scores take values below 1 as in the real data. Objects of an image have distinct
colours and shapes, so every question has one right answer, which the text alone cannot tell.

Splits: the world's training images give train2014; its held-out images are cut in two: the first two thirds give
val2014, the rest test-dev2015 (questions only, as the real test-dev). Written with the real split names, the
region features (a copy of the world's shards) and the world's tokenizer, so the default VQAOptions read it as
they would read the real data. The directory is cached under the cache root, keyed by the world and these options,
and appears complete or not at all.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ...config.tasks import VQAOptions
from ...data.formats import FeatureShards
from ...data.formats.shard_layout import FORMAT_VERSION as SHARD_FORMAT_VERSION
from ...data.synth import cached_world
from ...data.synth.directories import cached_directory
from ...data.synth.world import default_cache_dir
from .formats import Annotation, Question, write_annotations, write_questions

GENERATOR_VERSION = 1
"""Part of the cache key: bump it when a change here changes the files."""
IMAGE_KEY = "{image_id:06d}"
"""The world's image ids are zero-padded to 6 digits."""
SPLITS = ("train2014", "val2014", "test-dev2015")
HUMANS = 10


def image_objects(shards: FeatureShards, key: str, class_names: list[str]) -> list[tuple[str, str]]:
    """(colour, shape) of each object of an image, from its detections' soft class labels."""
    record = shards[key]
    if record.classes is None:
        raise ValueError(f"{shards.directory}: image {key} has no class labels; the synthetic VQA needs them")
    out = []
    for c in record.classes.argmax(axis=1):
        colour, shape = class_names[int(c)].split(" ")
        out.append((colour, shape))
    return out


def questions_for(
    objects: list[tuple[str, str]], rng: np.random.Generator, count: int
) -> list[tuple[str, str, str, str]]:
    """(question, answer, question_type, answer_type) of `count` different questions about the objects."""
    options = [(f"what colour is the {s} ?", c, "what colour is the", "other") for c, s in objects]
    options += [(f"what shape is the {c} object ?", s, "what shape is the", "other") for c, s in objects]
    options.append(("how many objects are there ?", str(len(objects)), "how many", "number"))
    picked = rng.choice(len(options), size=min(count, len(options)), replace=False)
    return [options[int(i)] for i in picked]


def human_answers(right: str, wrong: list[str], noise: float, rng: np.random.Generator) -> list[str]:
    return [str(rng.choice(wrong)) if rng.random() < noise else right for _ in range(HUMANS)]


def _write(opts: VQAOptions, world: Path, out: Path) -> None:
    info = json.loads((world / "world.json").read_text())
    names, colours, shapes = info["class_names"], info["colours"], info["shapes"]
    counts = [str(n) for n in range(1, max(2, info["config"]["max_objects"]) + 1)]
    wrong_of = {"what colour is the": colours, "what shape is the": shapes, "how many": counts}
    shards = FeatureShards(world / "features")
    n_train, n_val = info["counts"]["train"], info["counts"]["val"]
    n_val_split = (2 * n_val) // 3
    images = {
        "train2014": range(n_train),
        "val2014": range(n_train, n_train + n_val_split),
        "test-dev2015": range(n_train + n_val_split, n_train + n_val),
    }
    rng = np.random.default_rng([opts.synth.seed, GENERATOR_VERSION])
    for split in SPLITS:
        questions, annotations = [], []
        for image_id in images[split]:
            objects = image_objects(shards, IMAGE_KEY.format(image_id=image_id), names)
            for k, (text, right, qtype, atype) in enumerate(
                questions_for(objects, rng, opts.synth_questions_per_image)
            ):
                qid = image_id * 10 + k
                questions.append(Question(qid, image_id, text))
                wrong = [w for w in wrong_of[qtype] if w != right]
                answers = human_answers(right, wrong, opts.synth_noise, rng)
                annotations.append(Annotation(qid, image_id, answers, qtype, atype, right))
        write_questions(out / opts.questions.format(split=split), split, questions)
        if split != "test-dev2015":
            write_annotations(out / opts.annotations.format(split=split), split, annotations)
    shutil.copytree(world / "features", out / "features")
    shutil.copytree(world / "tokenizer", out / "tokenizer")
    (out / "vqa_synth.json").write_text(
        json.dumps({"generator_version": GENERATOR_VERSION, "world": str(world), "image_key": IMAGE_KEY}) + "\n"
    )


def cached_synth_vqa(opts: VQAOptions, cache_dir: str | Path | None = None) -> Path:
    """The synthetic VQA for `opts` (its world, question count and noise), generated on first use."""
    world = cached_world(opts.synth, cache_dir)
    params = {"per_image": opts.synth_questions_per_image, "noise": opts.synth_noise, **asdict(opts.synth)}
    key = f"v{GENERATOR_VERSION}-shards{SHARD_FORMAT_VERSION}-" + "-".join(f"{k}{v}" for k, v in params.items())
    path = Path(cache_dir or default_cache_dir()) / "vqa" / key
    return cached_directory(path, "vqa_synth.json", "the synthetic VQA", lambda root: _write(opts, world, root))
