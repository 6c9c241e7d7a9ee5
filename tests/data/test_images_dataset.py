"""CaptionDataset end to end: examples carry the resized, normalised image with boxes in its pixels; the flip keeps
image, boxes and caption consistent; masked regions' pixels are zeroed; bad images are rejected with the caption
file, record and image named, or skipped and counted, and an epoch over them completes."""

import dataclasses
import io
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vlbert_fast.config import DataConfig, ModelConfig, VisualConfig
from vlbert_fast.data import collate
from vlbert_fast.data.caption_dataset import CaptionDataset, RegionSource, Skipped, collate_pretrain
from vlbert_fast.data.formats import FormatError, RegionRecord, SkipCounter, read_cc_jsonl, write_region_json
from vlbert_fast.model import VLBertForPretraining
from vlbert_fast.tokenization import Tokenizer


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Many tiny convolutions: one thread is faster than two contending for the 2 shared cores of CI."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


VISUAL = VisualConfig(mode="e2e", depth=18, width=4, short_side=96, long_side=96, normalization="torchvision")


def make_dataset(root, captions="cc_train.jsonl", features="features", visual=VISUAL, **data):
    cfg = DataConfig(root=str(root), features=features, num_workers=0, **data)
    return CaptionDataset(
        read_cc_jsonl(root / captions),
        RegionSource(root, features),
        Tokenizer(root / "tokenizer"),
        cfg,
        source=str(root / captions),
        masking=True,
        num_classes=25,
        visual=visual,
    )


def test_example_carries_the_resized_image(small_world):
    ds = make_dataset(small_world, roi_probability=0.0)
    ex = ds[0]
    assert ex.region_features is None and ex.image.shape == (3, 96, 96) and ex.image_size == (96.0, 96.0)
    assert ex.boxes[0].tolist() == [0.0, 0.0, 95.0, 95.0]  # the whole resized image
    region = ds.regions.get(ds.records[0], "test")
    order = np.argsort(-region.classes.max(axis=1), kind="stable")
    np.testing.assert_allclose(ex.boxes[1:].numpy(), np.clip(region.boxes[order], 0, 63) * 1.5, rtol=1e-6)


def test_flip_keeps_image_boxes_and_caption_consistent(small_world):
    kwargs = {"mlm_probability": 0.0, "roi_probability": 0.0}
    plain = make_dataset(small_world, visual=dataclasses.replace(VISUAL, flip_prob=0.0), **kwargs)
    flipped = make_dataset(small_world, visual=dataclasses.replace(VISUAL, flip_prob=1.0), **kwargs)
    tok = plain.tokenizer
    left, right = tok.encode("left").ids[0], tok.encode("right").ids[0]
    index = next(i for i, r in enumerate(plain.records) if {"left", "right"} & set(r.caption))
    a, b = plain[index], flipped[index]
    assert torch.equal(b.image, a.image.flip(-1))
    w = a.image.shape[2]
    torch.testing.assert_close(b.boxes[:, [0, 2]], w - 1 - a.boxes[:, [2, 0]])
    torch.testing.assert_close(b.boxes[:, [1, 3]], a.boxes[:, [1, 3]])
    swap = {left: right, right: left}
    assert b.input_ids.tolist() == [swap.get(t, t) for t in a.input_ids.tolist()]
    assert left in a.input_ids.tolist() or right in a.input_ids.tolist()
    held_out = CaptionDataset(plain.records, plain.regions, tok, plain.cfg, plain.source, masking=False, visual=VISUAL)
    assert not held_out.augment  # held-out data is never flipped


def test_masked_regions_pixels_are_zeroed_after_the_flip(small_world):
    ds = make_dataset(
        small_world, visual=dataclasses.replace(VISUAL, flip_prob=1.0), roi_probability=1.0, roi_mask_fraction=1.0
    )
    ex = ds[3]
    assert not ex.region_masked[0] and ex.region_masked[1:].all() and ex.num_regions > 1
    hidden = torch.zeros(ex.image.shape[1:], dtype=torch.bool)
    for x1, y1, x2, y2 in ex.boxes[1:].int().tolist():
        hidden[y1 : y2 + 1, x1 : x2 + 1] = True
    assert (ex.image[:, hidden] == 0).all()
    assert (ex.image[:, ~hidden] != 0).all()  # the normalised background is never exactly 0


def test_masked_detections_truncation_drops_are_zeroed_too(small_world):
    # As the original: every detection is drawn for and masked ones are zeroed in the pixels before truncation, so a
    # masked region that truncation drops still hides its pixels from the regions that stay.
    ds = make_dataset(small_world, roi_probability=1.0, roi_mask_fraction=1.0, max_regions=1, mlm_probability=0.0)
    index = next(i for i, r in enumerate(ds.records) if ds.regions.get(r, "t").num_boxes >= 2)
    ex = ds[index]
    assert ex.num_regions == 2  # the whole image and the most confident detection
    region = ds.regions.get(ds.records[index], "test")
    order = np.argsort(-region.classes.max(axis=1), kind="stable")
    scaled = np.clip(region.boxes[order], 0, [region.image_w - 1, region.image_h - 1] * 2) * 1.5
    hidden = torch.zeros(ex.image.shape[1:], dtype=torch.bool)
    for x1, y1, x2, y2 in np.clip(scaled, 0, 95).astype(int).tolist():
        hidden[y1 : y2 + 1, x1 : x2 + 1] = True
    assert (ex.image[:, hidden] == 0).all() and (ex.image[:, ~hidden] != 0).all()


def test_e2e_batch_through_the_model(small_world):
    ds = make_dataset(small_world, roi_probability=0.5)
    examples = [ds[i] for i in range(3)]
    text_only = dataclasses.replace(examples[0], boxes=None, image=None, region_masked=None, region_predict=None)
    text_only.roi_targets = None
    batch = collate([examples[0], text_only, examples[1], examples[2]])
    assert batch.images.shape == (3, 3, 96, 96) and batch.region_features is None
    assert batch.region_image.tolist() == [0] * examples[0].num_regions + [1] * examples[1].num_regions + [2] * (
        examples[2].num_regions
    )
    cfg = ModelConfig(vocab_size=ds.tokenizer.vocab_size, visual_feature_dim=32, num_roi_classes=25, visual=VISUAL)
    model = VLBertForPretraining(cfg)
    out = model(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model.vlbert.visual.layer4[0].conv1.weight.grad.abs().sum() > 0
    assert model.vlbert.region_encoder.mask_appearance.grad is None  # e2e: masking is in the pixels
    with pytest.raises(ValueError, match="e2e but the batch has no images"):
        model(dataclasses.replace(batch, images=None))


# ---- bad images -----------------------------------------------------------------------------------------------


def _png(image: Image.Image, fmt="PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _exif_rotated() -> bytes:
    image = Image.new("RGB", (64, 48), (200, 40, 40))
    exif = image.getexif()
    exif[0x0112] = 6
    return _png(image, "JPEG", exif=exif.tobytes())


GOOD = _png(Image.new("RGB", (64, 64), (20, 200, 40)))
IMAGES = {  # name: (bytes, size of the record's frame, boxes, rejected reason or None)
    "good.png": (GOOD, (64, 64), [[4, 4, 30, 30]], None),
    "gray.png": (_png(Image.new("L", (64, 64), 90)), (64, 64), [[4, 4, 30, 30]], None),
    "rgba.png": (_png(Image.new("RGBA", (64, 64), (1, 2, 3, 4))), (64, 64), [[4, 4, 30, 30]], None),
    "cmyk.jpg": (_png(Image.new("CMYK", (64, 64), (0, 90, 90, 0)), "JPEG"), (64, 64), [[4, 4, 30, 30]], None),
    "deep.png": (_png(Image.fromarray(np.full((64, 64), 40000, np.uint16))), (64, 64), [[4, 4, 30, 30]], None),
    "rotated.jpg": (_exif_rotated(), (48, 64), [[2, 40, 40, 60]], None),
    "partly.png": (GOOD, (64, 64), [[50, 50, 90, 90]], None),
    "truncated.png": (GOOD[: len(GOOD) // 3], (64, 64), [[4, 4, 30, 30]], "unreadable image"),
    "text.png": (b"not an image at all", (64, 64), [[4, 4, 30, 30]], "unreadable image"),
    "tiny.png": (_png(Image.new("RGB", (8, 64))), (8, 64), [[1, 1, 5, 5]], "image too small"),
    "huge.png": (_png(Image.new("1", (10001, 12))), (10001, 12), [[1, 1, 5, 5]], "image too large"),
    "outside.png": (GOOD, (64, 64), [[70, 4, 90, 30]], "box outside image"),
    "missing.png": (None, (64, 64), [[4, 4, 30, 30]], "missing file"),
}


@pytest.fixture(scope="module")
def bad_world(small_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_images")
    shutil.copytree(small_world / "tokenizer", root / "tokenizer")
    (root / "images").mkdir()
    (root / "regions").mkdir()
    lines = []
    rng = np.random.default_rng(0)
    for name, (data, (w, h), boxes, _) in IMAGES.items():
        if data is not None:
            (root / "images" / name).write_bytes(data)
        boxes = np.asarray(boxes, dtype=np.float32)
        classes = rng.dirichlet(np.ones(25), size=len(boxes)).astype(np.float32)
        record = RegionRecord(name, w, h, boxes, np.zeros((len(boxes), 4), np.float32), classes)
        write_region_json(root / "regions" / f"{name}.json", record)
        lines.append(f'{{"image": "images/{name}", "caption": "a red circle .", "frcnn": "regions/{name}.json"}}')
    (root / "cc.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_bad_images_are_skipped_and_counted_and_the_epoch_completes(bad_world):
    ds = make_dataset(bad_world, captions="cc.jsonl", features="", on_bad_record="skip")
    counter = SkipCounter("skip")
    examples = []
    for loaded in DataLoader(ds, batch_size=4, collate_fn=collate_pretrain):
        for skipped in loaded.skipped:
            counter.handle(skipped.error)
        examples += [] if loaded.batch is None else [loaded.batch]
    rejected = {name: reason for name, (_, _, _, reason) in IMAGES.items() if reason}
    assert counter.total == len(rejected)
    by_reason = {}
    for (file, reason), count in counter.by_reason().items():
        assert file == str(bad_world / "cc.jsonl")
        by_reason[reason] = by_reason.get(reason, 0) + count
    assert by_reason == {r: list(rejected.values()).count(r) for r in set(rejected.values())}
    assert sum(b.num_samples for b in examples) == len(IMAGES) - len(rejected)
    for message in counter.examples:
        assert message.startswith(f"{bad_world / 'cc.jsonl'}, record ")


@pytest.mark.parametrize("name", [n for n, (*_, reason) in IMAGES.items() if reason])
def test_bad_images_raise_naming_caption_record_and_image(bad_world, name):
    ds = make_dataset(bad_world, captions="cc.jsonl", features="")
    index = list(IMAGES).index(name)
    with pytest.raises(FormatError) as err:
        ds[index]
    text = str(err.value)
    assert text.startswith(f"{bad_world / 'cc.jsonl'}, record {index}") and name in text, text
    assert err.value.reason == IMAGES[name][3]


def test_unusual_images_are_converted(bad_world):
    ds = make_dataset(bad_world, captions="cc.jsonl", features="", roi_probability=0.0)
    for name, (_, _, _, reason) in IMAGES.items():
        if reason:
            continue
        ex = ds[list(IMAGES).index(name)]
        assert not isinstance(ex, Skipped) and ex.image.shape[0] == 3 and max(ex.image.shape[1:]) == 96, name
        w, h = ex.image_size
        assert (ex.boxes[:, 2] <= w - 1).all() and (ex.boxes[:, 3] <= h - 1).all(), name
    rotated = ds[list(IMAGES).index("rotated.jpg")]
    assert rotated.image.shape == (3, 96, 72)  # shown portrait (W 48, H 64), the long side limited to 96
