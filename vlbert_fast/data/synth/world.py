"""Generate the synthetic world on disk, in the real formats the loaders read (`vlbert-fast synth`).

Layout of the output directory:
  images.zip               PNG images, stored (uncompressed) as the original's image archives are
  frcnn.zip                one region-feature JSON per image (base64 float32 boxes, features, classes)
  cc_train.jsonl           Conceptual Captions lines {"image": "images.zip@/ID.png", "caption": [...],
  cc_val.jsonl               "frcnn": "frcnn.zip@/ID.json"}
  features.tsv             the same regions as a bottom-up-attention TSV
  features/                the same regions as feature shards (index.json + .npy), what training reads
  corpus.txt               the text-only corpus, one sentence per line
  tokenizer/vocab.txt      a WordPiece vocabulary trained with `tokenizers` on captions and corpus, padded with
                           [unusedN] to exactly `vocab_size` tokens
  probe_words.txt          colour and shape words, the words the end-of-run evaluation masks
  world.json               the config, class names and counts

Deterministic: the same SynthConfig gives byte-identical files. The directory appears complete or not at all (it is
built under a temporary name and renamed).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ...config import SynthConfig
from ..cache_dir import default_cache_dir
from ..formats import (
    CaptionRecord,
    RegionRecord,
    convert_to_shards,
    region_json_bytes,
    write_bua_tsv,
    write_cc_jsonl,
)
from ..formats.shard_layout import FORMAT_VERSION as SHARD_FORMAT_VERSION
from .directories import cached_directory, write_new_directory
from .extractor import RegionExtractor
from .scene import COLOURS, NUM_CLASSES, SHAPES, SceneObject, caption, class_id, corpus_line, render, sample_scene

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
GENERATOR_VERSION = 1
"""Part of the cache key: bump it whenever a change here changes the files, so no stale world is reused."""
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps keep the archives byte-identical across runs


def detections(objects: list[SceneObject], image_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Boxes as a detector would give them (jittered by up to a pixel, sorted by confidence) and soft class labels:
    the true class gets the confidence, the rest goes to the same shape in other colours and to background."""
    boxes, labels = [], []
    for obj in objects:
        jitter = rng.uniform(-1.0, 1.0, size=4)
        box = np.clip(np.asarray(obj.box, dtype=np.float64) + jitter, 0, image_size - 1)
        box[2:] = np.maximum(box[2:], box[:2])
        confidence = rng.uniform(0.6, 0.95)
        soft = np.zeros(NUM_CLASSES, dtype=np.float64)
        soft[class_id(obj.colour, obj.shape)] = confidence
        others = [class_id(c, obj.shape) for c in COLOURS if c != obj.colour]
        soft[others] = 0.7 * (1.0 - confidence) / len(others)
        soft[0] = 0.3 * (1.0 - confidence)
        boxes.append(box)
        labels.append(soft)
    order = np.argsort([-lab.max() for lab in labels], kind="stable")
    return np.asarray(boxes, dtype=np.float32)[order], np.asarray(labels, dtype=np.float32)[order]


def _zip_member(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    archive.writestr(info, data)


def train_vocabulary(texts: list[str], vocab_size: int, out_dir: Path) -> None:
    """WordPiece vocabulary with `tokenizers`, in id order, padded with [unusedN] to exactly vocab_size."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    # The trainer breaks ties between equally frequent merges in a varying order, so the pieces it leaves half-way
    # through words ("##iang" or "##iangle") differ from run to run. Whole words of the text and single
    # characters do not: keeping only those, sorted, makes the vocabulary reproducible, and every word one piece.
    whole = {w for text in texts for w, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text))}
    learned = [w for w in tok.get_vocab() if w not in SPECIAL_TOKENS and (w in whole or len(w.removeprefix("##")) == 1)]
    if missing := sorted(whole - set(learned)):
        raise ValueError(f"vocab_size={vocab_size} is too small for the synthetic text: no piece for {missing[:5]}")
    words = SPECIAL_TOKENS + sorted(learned)
    words += [f"[unused{i}]" for i in range(vocab_size - len(words))]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    (out_dir / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}) + "\n")


def generate(cfg: SynthConfig, out: str | Path) -> Path:
    """Writes the world into `out` (module docstring); returns it. Refuses to overwrite an existing directory."""
    return write_new_directory(out, "the synthetic world", lambda root: _write(cfg, root))


def _write(cfg: SynthConfig, root: Path) -> None:
    rng = np.random.default_rng(cfg.seed)
    extractor = RegionExtractor(cfg.feature_dim)
    size = cfg.image_size
    records: list[RegionRecord] = []
    captions: dict[str, list[CaptionRecord]] = {"train": [], "val": []}
    with (
        zipfile.ZipFile(root / "images.zip", "w") as images,
        zipfile.ZipFile(root / "frcnn.zip", "w") as frcnn,
    ):
        for i in range(cfg.train_images + cfg.val_images):
            image_id = f"{i:06d}"
            objects = sample_scene(rng, size, cfg.max_objects)
            picture = render(objects, size, rng)
            boxes, classes = detections(objects, size, rng)
            record = RegionRecord(
                image_id=image_id,
                image_w=size,
                image_h=size,
                boxes=boxes,
                features=extractor(np.asarray(picture), boxes),
                classes=classes,
                image_box_feature=None,
            )
            png = io.BytesIO()
            picture.save(png, format="PNG")
            _zip_member(images, f"{image_id}.png", png.getvalue())
            _zip_member(frcnn, f"{image_id}.json", region_json_bytes(record))
            split = "train" if i < cfg.train_images else "val"
            captions[split].append(
                CaptionRecord(
                    image=f"images.zip@/{image_id}.png",
                    caption=caption(objects, rng),
                    frcnn=f"frcnn.zip@/{image_id}.json",
                )
            )
            records.append(record)
    write_cc_jsonl(root / "cc_train.jsonl", captions["train"])
    write_cc_jsonl(root / "cc_val.jsonl", captions["val"])
    write_bua_tsv(root / "features.tsv", records)
    convert_to_shards(
        records, root / "features", feature_dim=cfg.feature_dim, num_classes=NUM_CLASSES, max_boxes=cfg.max_objects
    )
    corpus = [corpus_line(rng) for _ in range(cfg.corpus_lines)]
    (root / "corpus.txt").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    texts = [" ".join(c.caption) for split in captions.values() for c in split] + corpus
    train_vocabulary(texts, cfg.vocab_size, root / "tokenizer")
    (root / "probe_words.txt").write_text("\n".join([*COLOURS, *SHAPES]) + "\n", encoding="utf-8")
    world = {
        "generator_version": GENERATOR_VERSION,
        "config": asdict(cfg),
        "num_classes": NUM_CLASSES,
        "class_names": ["background"] + [f"{c} {s}" for c in COLOURS for s in SHAPES],
        "colours": list(COLOURS),
        "shapes": list(SHAPES),
        "counts": {"train": len(captions["train"]), "val": len(captions["val"]), "corpus": len(corpus)},
    }
    (root / "world.json").write_text(json.dumps(world, indent=2) + "\n")


def cache_key_prefix() -> str:
    """The start of every synthetic data set's cache key: the generator's version and the feature-shard format the
    set's shards are written in, so a checkout writing another format never finds this one's files, nor this one
    theirs (other checkouts share the cache directory)."""
    return f"v{GENERATOR_VERSION}-shards{SHARD_FORMAT_VERSION}-"


def cached_world(cfg: SynthConfig, cache_dir: str | Path | None = None) -> Path:
    """The world for `cfg` under the cache directory, generated on first use (keyed by the config's values)."""
    key = cache_key_prefix() + "-".join(f"{k}{v}" for k, v in asdict(cfg).items())
    path = Path(cache_dir or default_cache_dir()) / "synth" / key
    return cached_directory(path, "world.json", "the synthetic world", lambda root: _write(cfg, root))
