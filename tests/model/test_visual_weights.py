"""ResNet weights load into the visual branch from torchvision, Detectron2 and maskrcnn-benchmark names and from
our own checkpoints, with a report; shape mismatches and missing tensors fail loudly. Sources are random state
dicts written in each naming (no download is possible here)."""

import dataclasses
import re

import pytest
import torch
from safetensors.torch import save_file

from vlbert_fast.config import ModelConfig, VisualConfig
from vlbert_fast.model import VLBertForPretraining
from vlbert_fast.model.resnet_weights import ResNetLoadError, load_resnet_weights
from vlbert_fast.model.visual_branch import VisualBranch

CFG = VisualConfig(depth=18, width=4, frozen_bn=False, frozen_stages=0, roi_align_backend="reference")
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def torchvision_names(depth: int) -> list[str]:
    """torchvision.models.resnet{depth}().state_dict().keys(), written out from its architecture."""
    blocks, convs = {18: ((2, 2, 2, 2), 2), 50: ((3, 4, 6, 3), 3)}[depth]
    names = ["conv1.weight", *(f"bn1.{s}" for s in BN)]
    for stage, count in enumerate(blocks, 1):
        for b in range(count):
            for c in range(1, convs + 1):
                names += [f"layer{stage}.{b}.conv{c}.weight", *(f"layer{stage}.{b}.bn{c}.{s}" for s in BN)]
            if b == 0 and (stage > 1 or depth >= 50):
                names += [f"layer{stage}.{b}.downsample.0.weight", *(f"layer{stage}.{b}.downsample.1.{s}" for s in BN)]
    return [*names, "fc.weight", "fc.bias"]


def random_torchvision_state(cfg: VisualConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    shapes = VisualBranch(cfg).state_dict()
    state = {}
    for name, ref in shapes.items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(1000)
        elif name.endswith("running_var"):
            state[name] = torch.rand(ref.shape) + 0.5
        else:
            state[name] = torch.randn(ref.shape) * 0.1
    state["fc.weight"] = torch.randn(1000, cfg.out_channels)
    state["fc.bias"] = torch.randn(1000)
    return state


def detectron2_name(name: str) -> str:
    if name.startswith(("conv1.", "bn1.")):
        return "backbone.stem.conv1." + ("weight" if name == "conv1.weight" else "norm." + name.split(".", 1)[1])
    stage, rest = re.match(r"layer(\d)\.(.*)", name).groups()
    rest = re.sub(r"bn(\d)\.", r"conv\1.norm.", rest).replace("downsample.0.", "shortcut.")
    rest = rest.replace("downsample.1.", "shortcut.norm.")
    prefix = "roi_heads." if stage == "4" else "backbone."
    return f"{prefix}res{int(stage) + 1}.{rest}"


def assert_loaded(branch: VisualBranch, state: dict[str, torch.Tensor], rename=lambda n: n) -> None:
    for name, value in branch.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            assert torch.equal(value, state[rename(name)]), name


def test_our_names_are_torchvision_names():
    assert list(VisualBranch(CFG).state_dict()) == torchvision_names(18)[:-2]
    assert list(VisualBranch(dataclasses.replace(CFG, depth=50)).state_dict()) == torchvision_names(50)[:-2]


def test_torchvision_checkpoint_loads_with_a_report(tmp_path):
    state = random_torchvision_state(CFG)
    torch.save(state, tmp_path / "resnet18.pth")
    branch = VisualBranch(dataclasses.replace(CFG, pretrained=str(tmp_path / "resnet18.pth")))
    report = branch.load_report
    assert report.naming == "torchvision" and report.unused == ["fc.weight", "fc.bias"]
    assert len(report.loaded) == len(state) - 2 and not report.missing_statistics
    assert_loaded(branch, state)
    assert f"loaded {len(state) - 2} tensors" in str(report) and "fc.weight" in str(report)
    # frozen BatchNorms take the same four tensors; the counters are reported, not loaded
    frozen = VisualBranch(dataclasses.replace(CFG, frozen_bn=True, pretrained=str(tmp_path / "resnet18.pth")))
    assert_loaded(frozen, state)
    assert "layer1.0.bn1.num_batches_tracked" in frozen.load_report.unused


def test_detectron2_and_maskrcnn_benchmark_names(tmp_path):
    state = random_torchvision_state(CFG, seed=1)
    d2 = {detectron2_name(k): v for k, v in state.items() if not k.startswith("fc.") and "num_batches" not in k}
    d2["proposal_generator.rpn_head.conv.weight"] = torch.zeros(3)
    assert "backbone.res2.0.conv1.norm.running_var" in d2 and "roi_heads.res5.1.conv2.weight" in d2
    assert "backbone.res3.0.shortcut.norm.weight" in d2 and "backbone.stem.conv1.norm.bias" in d2
    torch.save({"model": d2, "__author__": "test"}, tmp_path / "d2.pth")
    branch = VisualBranch(CFG)
    report = load_resnet_weights(branch, tmp_path / "d2.pth")
    assert report.naming == "detectron2" and report.unused == ["proposal_generator.rpn_head.conv.weight"]
    assert_loaded(branch, state)
    mrcnn = {}
    for k, v in state.items():
        if k.startswith(("conv1.", "bn1.")):
            mrcnn[f"module.backbone.body.stem.{k}"] = v
        elif k.startswith("layer4."):
            mrcnn[f"module.roi_heads.box.feature_extractor.head.{k}"] = v
        elif not k.startswith("fc."):
            mrcnn[f"module.backbone.body.{k}"] = v
    branch = VisualBranch(CFG)
    assert load_resnet_weights(branch, mrcnn).naming == "maskrcnn-benchmark"
    assert_loaded(branch, state)


def test_our_checkpoint_and_safetensors(tmp_path):
    e2e = dataclasses.replace(CFG, mode="e2e")
    model = VLBertForPretraining(ModelConfig(visual_feature_dim=32, visual=e2e))
    torch.save({"module": model.state_dict()}, tmp_path / "mp_rank_00_model_states.pt")
    branch = VisualBranch(CFG)
    report = load_resnet_weights(branch, tmp_path / "mp_rank_00_model_states.pt")
    assert report.naming == "vlbert_fast" and not report.unused  # only the visual.* keys are considered
    for name, value in branch.state_dict().items():
        assert torch.equal(value, model.vlbert.visual.state_dict()[name])
    state = random_torchvision_state(CFG, seed=2)
    save_file(state, str(tmp_path / "r18.safetensors"))
    branch = VisualBranch(CFG)
    load_resnet_weights(branch, tmp_path / "r18.safetensors")
    assert_loaded(branch, state)


def test_missing_statistics_are_reported_and_missing_weights_fail(tmp_path):
    state = random_torchvision_state(CFG)
    folded = {k: v for k, v in state.items() if "running" not in k}  # a Caffe conversion folds them
    branch = VisualBranch(CFG)
    report = load_resnet_weights(branch, folded)
    assert len(report.missing_statistics) == 2 * 20 and "layer4.1.bn2.running_var" in report.missing_statistics
    assert torch.equal(branch.layer4[1].bn2.running_var, torch.ones(32))
    no_res5 = {k: v for k, v in state.items() if not k.startswith("layer4.")}
    with pytest.raises(ResNetLoadError, match=r"15 of this model's tensors are missing.*layer4\.0\.conv1\.weight"):
        load_resnet_weights(VisualBranch(CFG), no_res5)


def test_shape_mismatch_and_unreadable_files_fail_loudly(tmp_path):
    wide = random_torchvision_state(dataclasses.replace(CFG, width=8))
    with pytest.raises(
        ResNetLoadError, match=r"(?s)100 shapes differ.*conv1\.weight \(8, 3, 7, 7\) -> conv1\.weight \(4, 3.*88 more"
    ):
        load_resnet_weights(VisualBranch(CFG), wide)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ResNetLoadError, match=r"junk\.pth: cannot read"):
        load_resnet_weights(VisualBranch(CFG), tmp_path / "junk.pth")
    with pytest.raises(ResNetLoadError, match="no such file"):
        VisualBranch(dataclasses.replace(CFG, pretrained=str(tmp_path / "absent.pth")))
    with pytest.raises(ResNetLoadError, match="no tensor is a ResNet part"):
        load_resnet_weights(VisualBranch(CFG), {"encoder.weight": torch.zeros(2)})
