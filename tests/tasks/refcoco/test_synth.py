"""Synthetic RefCOCO+: expressions that name exactly one object, deterministic files in the refer toolkit's formats
that the same readers and the task load, unc-style splits, and detections with jitter and a spurious box."""

import numpy as np
import pytest

from vlbert_fast.config import ModelConfig, SynthConfig
from vlbert_fast.config.finetune_run import FinetuneConfig
from vlbert_fast.config.tasks import RefCOCOOptions
from vlbert_fast.data.synth.scene import SceneObject
from vlbert_fast.tasks.refcoco import RefCOCOTask, box_iou, generate_refcoco, read_detections, read_instances
from vlbert_fast.tasks.refcoco.refer import read_refs
from vlbert_fast.tasks.refcoco.synth import expressions

from .conftest import VOCAB

SYNTH = SynthConfig(seed=5, feature_dim=16)


def test_expressions_name_one_object():
    red = SceneObject("red", "circle", "small", (5, 20, 15, 30))
    blue = SceneObject("blue", "square", "small", (30, 20, 40, 30))
    green = SceneObject("green", "triangle", "small", (50, 20, 60, 30))
    scene = [red, blue, green]
    assert expressions(red, scene) == [
        ["the", "red", "circle"],
        ["the", "circle"],
        ["the", "red", "object"],
        # "left of the green triangle" is true of the blue square too, so it is not offered
        ["the", "object", "left", "of", "the", "blue", "square"],
        ["the", "object", "on", "the", "left"],
    ]
    middle = expressions(blue, scene)
    assert ["the", "object", "on", "the", "left"] not in middle and [
        "the",
        "object",
        "on",
        "the",
        "right",
    ] not in middle
    assert ["the", "object", "right", "of", "the", "red", "circle"] not in middle  # the green one is too
    assert ["the", "object", "left", "of", "the", "green", "triangle"] not in middle
    assert expressions(green, scene)[-1] == ["the", "object", "on", "the", "right"]


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    base = tmp_path_factory.mktemp("synth_refcoco")
    (base / "tok").mkdir()
    (base / "tok" / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return generate_refcoco(SYNTH, 12, 6, base / "a", tokenizer=base / "tok")


def test_deterministic_bytes(synth_root, tmp_path):
    again = generate_refcoco(SYNTH, 12, 6, tmp_path / "b", tokenizer=synth_root / "tokenizer")
    files = sorted(p.relative_to(synth_root) for p in synth_root.rglob("*") if p.is_file())
    assert len(files) > 8 and files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in files:
        assert (synth_root / name).read_bytes() == (again / name).read_bytes(), name
    with pytest.raises(FileExistsError):
        generate_refcoco(SYNTH, 12, 6, again)


def test_files_in_the_toolkits_format(synth_root):
    refs = read_refs(synth_root / "refcoco+" / "refs(unc).p")
    inst = read_instances(synth_root / "refcoco+" / "instances.json")
    dets = read_detections(synth_root / "refcoco+" / "proposal" / "res101_coco_minus_refer_notime_dets.json")
    assert len(inst.images) == 12 + 3 * 6
    assert {r.split for r in refs} == {"train", "val", "testA", "testB"}
    split_of_image = {}
    for r in refs:
        assert split_of_image.setdefault(r.image_id, r.split) == r.split  # a whole image belongs to one split
        name = inst.categories[inst.annotations[r.ann_id].category_id]
        if r.split == "testA":
            assert name.split()[1] in ("circle", "square")
        if r.split == "testB":
            assert name.split()[1] in ("triangle", "diamond")
        words = {w for s in r.sentences for w in s.tokens}
        assert words & set(name.split()) or "object" in words
    for image_id, anns in inst.by_image.items():
        assert 2 <= len(anns) <= 4
        truth = np.array([inst.annotations[a].box for a in anns])
        iou = box_iou(dets[image_id], truth)
        assert len(dets[image_id]) in (len(anns), len(anns) + 1)
        np.testing.assert_array_equal(iou[: len(anns)].argmax(1), np.arange(len(anns)))  # jittered in order
        assert (iou[np.arange(len(anns)), np.arange(len(anns))] > 0.5).all()
        assert (iou[len(anns) :] < 0.1).all()  # the spurious box


@pytest.mark.parametrize("protocol", ["gt", "detected"])
def test_the_task_reads_it(synth_root, protocol):
    model = ModelConfig(
        vocab_size=len(VOCAB),
        hidden_size=8,
        num_attention_heads=2,
        intermediate_size=16,
        visual_feature_dim=SYNTH.feature_dim,
    )
    options = RefCOCOOptions(root=str(synth_root), train_boxes=protocol, eval_boxes=protocol)
    task = RefCOCOTask(FinetuneConfig(task="refcoco", model=model, refcoco=options))
    for split in ("train", "val", "testA", "testB"):
        for sample in task.datasets(split):
            labels = sample.target["labels"].numpy()
            assert labels[0] == 0 and labels.sum() == 1  # exactly one RoI is the target, never the whole image
            assert sample.rows[0].region_features.shape == (len(labels), SYNTH.feature_dim)
