"""`vlbert-fast export` on the 2-rank ZeRO-2 reference run, `from_pretrained` of the export and of the run itself,
`engine.init_from` with each, and the resume guard against a changed config (all in this process: none of it
starts a process group)."""

import dataclasses
import json

import torch
from safetensors import safe_open

from vlbert_fast.cli import main
from vlbert_fast.config import RunConfig, load_config
from vlbert_fast.model import VLBertForPretraining, from_pretrained
from vlbert_fast.model.consolidate import consolidated_state_dict
from vlbert_fast.model.pretrained import init_weights_from


def test_export_roundtrip(reference_run, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(reference_run), str(out)]) == 0
    assert "exported" in capsys.readouterr().out
    step8 = reference_run / "checkpoints" / "step8"
    consolidated = consolidated_state_dict(step8)
    model = from_pretrained(out)
    assert isinstance(model, VLBertForPretraining) and not model.training
    assert all(torch.equal(model.state_dict()[k], consolidated[k]) for k in consolidated)
    config = json.loads((out / "config.json").read_text())
    assert config == dataclasses.asdict(load_config(RunConfig, [reference_run / "config.yaml"]).model)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        meta = f.metadata()
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}
    assert meta["format"] == "vlbert_fast" and meta["step"] == "8" and meta["source"] == str(step8.resolve())
    direct = from_pretrained(reference_run)  # the run directory itself, consolidated on the fly
    assert all(torch.equal(direct.state_dict()[k], consolidated[k]) for k in consolidated)
    bare = from_pretrained(out, with_heads=False)
    assert type(bare).__name__ == "VLBertModel"


def test_export_refuses_what_it_cannot_use(reference_run, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(reference_run), str(out)]) == 0
    assert main(["export", str(reference_run), str(out)]) == 2
    assert "already holds an export" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty"), str(tmp_path / "other")]) == 2
    assert "no complete checkpoint found" in capsys.readouterr().err


def test_init_from_our_run_and_our_export(reference_run, tmp_path):
    out = tmp_path / "export"
    assert main(["export", str(reference_run), str(out)]) == 0
    consolidated = consolidated_state_dict(reference_run / "checkpoints" / "step8")
    cfg = load_config(RunConfig, [reference_run / "config.yaml"]).model
    for source in (reference_run, reference_run / "checkpoints" / "step8", out):
        model = VLBertForPretraining(cfg)
        report = init_weights_from(model, source)
        assert "weights only" in report
        assert all(torch.equal(model.state_dict()[k], consolidated[k]) for k in consolidated), source


def test_resume_refuses_a_changed_config(reference_run, tiny_config, capsys):
    # resume=auto finds run_dir/checkpoints/latest; the check happens before any process group or file is made
    changed = ["train.lr=0.5", "model.kernels=reference"]
    args = ["pretrain", "--config", str(tiny_config), f"run_dir={reference_run}", *changed]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "train.lr: 0.001 -> 0.5" in err and "engine.allow_config_change=true" in err
    assert "model.kernels" not in err  # an implementation choice, free to change on resume
