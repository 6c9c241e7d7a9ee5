"""The synthetic world: deterministic by seed, in every real format, captions true of their images."""

import hashlib
import json
import zipfile

import numpy as np
from PIL import Image

from vlbert_fast.config import SynthConfig
from vlbert_fast.data.formats import FeatureShards, read_bua_tsv, read_cc_jsonl, read_region_json
from vlbert_fast.data.synth import generate
from vlbert_fast.data.synth.scene import COLOURS, SHAPES, class_id
from vlbert_fast.tokenization import Tokenizer


def digest(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_world(tmp_path):
    cfg = SynthConfig(train_images=12, val_images=3, corpus_lines=10, seed=5)
    a = digest(generate(cfg, tmp_path / "a"))
    b = digest(generate(cfg, tmp_path / "b"))
    c = digest(generate(SynthConfig(train_images=12, val_images=3, corpus_lines=10, seed=6), tmp_path / "c"))
    assert a == b
    assert a["cc_train.jsonl"] != c["cc_train.jsonl"]
    assert {
        "images.zip",
        "frcnn.zip",
        "cc_train.jsonl",
        "cc_val.jsonl",
        "features.tsv",
        "features/index.json",
        "corpus.txt",
        "tokenizer/vocab.txt",
        "probe_words.txt",
        "world.json",
    } <= set(a)


def test_every_format_holds_the_same_regions(small_world):
    shards = FeatureShards(small_world / "features")
    tsv = {r.image_id: r for r in read_bua_tsv(small_world / "features.tsv")}
    captions = read_cc_jsonl(small_world / "cc_train.jsonl")
    frcnn = zipfile.ZipFile(small_world / "frcnn.zip")
    for rec in captions[:10]:
        image_id = rec.image.split("@/")[1].removesuffix(".png")
        from_json = read_region_json(frcnn.read(rec.frcnn.split("@/")[1]))
        for other in (tsv[image_id], shards[image_id]):
            np.testing.assert_allclose(other.boxes, from_json.boxes)
            np.testing.assert_allclose(other.features, from_json.features, rtol=1e-3, atol=1e-2)  # shards: fp16


def test_captions_are_true_of_their_images(small_world):
    images = zipfile.ZipFile(small_world / "images.zip")
    frcnn = zipfile.ZipFile(small_world / "frcnn.zip")
    for rec in read_cc_jsonl(small_world / "cc_train.jsonl")[:20]:
        regions = read_region_json(frcnn.read(rec.frcnn.split("@/")[1]))
        present = {int(c) for c in regions.classes.argmax(1)}
        words = rec.caption
        for i, w in enumerate(words[:-1]):
            if w in COLOURS and words[i + 1] in SHAPES:
                assert class_id(w, words[i + 1]) in present, (words, present)
        picture = Image.open(images.open(rec.image.split("@/")[1]))
        assert picture.size == (regions.image_w, regions.image_h)


def test_vocabulary_and_probe_words(small_world):
    tok = Tokenizer(small_world / "tokenizer")
    world = json.loads((small_world / "world.json").read_text())
    assert tok.vocab_size == world["config"]["vocab_size"]
    probes = (small_world / "probe_words.txt").read_text().split()
    assert probes == [*COLOURS, *SHAPES]
    assert all(len(tok.encode(w).ids) == 1 for w in probes)  # one piece each: masking one hides the whole word


def test_the_cache_key_carries_the_shard_format(tmp_path):
    """A world cached by a checkout writing another shard format (other branches share ~/.cache/vlbert_fast) is never
    found by this one, nor this one's by it: the format is part of the key; and its shards are this format's."""
    from dataclasses import asdict

    from vlbert_fast.data.formats.shard_layout import FORMAT_VERSION
    from vlbert_fast.data.synth import cached_world
    from vlbert_fast.data.synth.world import GENERATOR_VERSION

    cfg = SynthConfig(train_images=6, val_images=2, corpus_lines=5, seed=11)
    values = "-".join(f"{k}{v}" for k, v in asdict(cfg).items())
    older = tmp_path / "synth" / f"v{GENERATOR_VERSION}-{values}"  # the key before the format was part of it
    older.mkdir(parents=True)
    (older / "world.json").write_text("{}")  # complete, as far as the cache can tell
    world = cached_world(cfg, tmp_path)
    assert world.name == f"v{GENERATOR_VERSION}-shards{FORMAT_VERSION}-{values}" and world != older
    assert json.loads((world / "features/index.json").read_text())["version"] == FORMAT_VERSION
    assert len(FeatureShards(world / "features")) == 8
