"""`vlbert-fast extract-features`: images + boxes -> region features with the visual branch, into our shards and
the per-image region JSON; the shards feed precomputed training; bad images stop the run naming the file, or are
skipped and counted."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from vlbert_fast import cli
from vlbert_fast.config import DataConfig, VisualConfig
from vlbert_fast.data.caption_dataset import CaptionDataset, RegionSource
from vlbert_fast.data.formats import FeatureShards, read_bytes, read_cc_jsonl, read_region_json
from vlbert_fast.data.images import prepare_image
from vlbert_fast.model.visual_branch import VisualBranch
from vlbert_fast.tokenization import Tokenizer

OVERRIDES = ["model.visual.depth=18", "model.visual.width=4", "model.visual.short_side=96", "model.visual.long_side=96"]
VISUAL = VisualConfig(depth=18, width=4, short_side=96, long_side=96)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Many tiny convolutions: one thread is faster than two contending for the 2 shared cores of CI."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random ResNet in torchvision names (no download possible): the command and the test load the same one."""
    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("weights") / "r18.pth"
    torch.save(VisualBranch(VISUAL).state_dict(), path)
    return path


def extract(*args: str) -> int:
    return cli.main(["extract-features", "--device", "cpu", *args])


def test_captions_to_shards_and_json(small_world, weights, tmp_path):
    out = tmp_path / "features"
    args = ["--input", str(small_world / "cc_val.jsonl"), "--out", str(out), "--format", "both", "--batch-size", "3"]
    assert extract(*args, *OVERRIDES, f"model.visual.pretrained={weights}") == 0
    records = read_cc_jsonl(small_world / "cc_val.jsonl")
    shards = FeatureShards(out)
    assert len(shards) == len(records)
    branch = VisualBranch(dataclasses.replace(VISUAL, pretrained=str(weights))).eval()
    for record in records[:3]:
        stored = shards[record.frcnn]
        source = read_region_json(read_bytes(record.frcnn, small_world))
        prepared = prepare_image(
            read_bytes(record.image, small_world), "x", VISUAL, (source.image_w, source.image_h), source.boxes
        )
        w, h = prepared.size
        boxes = torch.cat([torch.tensor([[0.0, 0.0, w - 1.0, h - 1.0]]), torch.from_numpy(prepared.boxes)])
        with torch.no_grad():
            expected = branch(prepared.pixels[None], boxes, torch.zeros(len(boxes), dtype=torch.long)).numpy()
        as_json = read_region_json(out / "json" / f"{record.frcnn.split('@/')[1]}")
        assert as_json.image_id == record.frcnn and (as_json.image_w, as_json.image_h) == (64, 64)
        np.testing.assert_array_equal(as_json.boxes, np.clip(source.boxes, 0, 63))
        np.testing.assert_array_equal(as_json.classes, source.classes)
        # fp32 in the JSON; batching three images may change the order of the convolutions' sums
        np.testing.assert_allclose(as_json.features, expected[1:], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(as_json.image_box_feature, expected[0], rtol=1e-4, atol=1e-5)
        # float16 in the shards: relative error at most 2^-11
        np.testing.assert_allclose(stored.features, expected[1:], rtol=1e-3, atol=1e-4)
    # the shards drive precomputed training like any converted features
    data = DataConfig(root=str(small_world), features=str(out), num_workers=0)
    ds = CaptionDataset(
        records, RegionSource(small_world, str(out)), Tokenizer(small_world / "tokenizer"), data, "val", feature_dim=32
    )
    assert ds[0].region_features.shape[1] == 32


def test_boxes_file_and_tsv_with_bad_images(small_world, weights, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    boxes = [
        {"image": str(small_world / "images.zip") + "@/000041.png", "boxes": [[2, 3, 30, 40]], "image_id": "a"},
        {"image": "broken.png", "boxes": [[1, 1, 5, 5]]},
        {"image": "absent.png", "boxes": [[1, 1, 5, 5]]},
        {"image": str(small_world / "images.zip") + "@/000042.png", "boxes": [[0, 0, 10, 10], [5, 5, 63, 63]]},
    ]
    (tmp_path / "boxes.jsonl").write_text("\n".join(json.dumps(b) for b in boxes) + "\n")
    out = tmp_path / "out"
    common = ["--input", str(tmp_path / "boxes.jsonl"), "--out", str(out), *OVERRIDES]
    assert extract(*common) == 2
    assert "broken.png: cannot read the image" in capsys.readouterr().err
    assert extract(*common, "--skip-bad", "--format", "json") == 0
    text = capsys.readouterr().out
    assert "skipped 2 malformed records" in text and "absent.png" in text
    assert sorted(p.name for p in (out / "json").iterdir()) == ["000042.json", "a.json"]
    second = read_region_json(out / "json" / "000042.json")
    assert second.features.shape == (2, 32) and (second.image_w, second.image_h) == (64, 64)
    tsv = ["--input", str(small_world / "features.tsv"), "--image-pattern", "images.zip@/{image_id}.png"]
    assert extract(*tsv, "--out", str(tmp_path / "tsv"), "--root", str(small_world), *OVERRIDES) == 0
    assert len(FeatureShards(tmp_path / "tsv")) == 50 and "000049" in FeatureShards(tmp_path / "tsv")
