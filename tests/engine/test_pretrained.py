"""Exports without a training run: save_pretrained / from_pretrained, their errors, init_from a Hugging Face BERT
directory, and the stage-0 consolidation (fp32 master copies preferred over the rounded module)."""

import dataclasses
import json

import pytest
import torch

from tests.model.helpers import random_hf_bert
from vlbert_fast.model import PretrainedError, VLBertForPretraining, from_pretrained, save_pretrained
from vlbert_fast.model.checkpoint_dir import CheckpointError
from vlbert_fast.model.consolidate import consolidated_state_dict
from vlbert_fast.model.pretrained import init_weights_from


def trained_like(cfg, seed=1) -> VLBertForPretraining:
    """A model whose every parameter is random (no zero gains), so a lost tensor shows."""
    torch.manual_seed(seed)
    model = VLBertForPretraining(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    return model


def test_save_and_load(tiny_cfg, tmp_path):
    model = trained_like(tiny_cfg)
    save_pretrained(model.state_dict(), tiny_cfg, tmp_path / "out", metadata={"step": 7})
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == dataclasses.asdict(tiny_cfg)
    loaded = from_pretrained(tmp_path / "out")
    assert loaded.cfg == tiny_cfg
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    bare = from_pretrained(tmp_path / "out", with_heads=False)
    assert torch.equal(bare.embeddings.word_embeddings.weight, model.vlbert.embeddings.word_embeddings.weight)


def test_errors_name_the_problem(tiny_cfg, tmp_path):
    model = trained_like(tiny_cfg)
    state = model.state_dict()
    state.pop("roi_head.classifier.bias")
    with pytest.raises(PretrainedError, match=r"missing \['roi_head.classifier.bias'\]"):
        save_pretrained(state, tiny_cfg, tmp_path / "a")
    wrong = dataclasses.replace(tiny_cfg, hidden_size=32, num_attention_heads=4)
    with pytest.raises(PretrainedError, match="shape mismatch"):
        save_pretrained(model.state_dict(), wrong, tmp_path / "b")
    save_pretrained(model.state_dict(), tiny_cfg, tmp_path / "c")
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    (tmp_path / "c" / "config.json").write_text(json.dumps({**config, "hiden_size": 3}))
    with pytest.raises(PretrainedError, match="unknown key 'hiden_size'; did you mean 'hidden_size'"):
        from_pretrained(tmp_path / "c")
    with pytest.raises(PretrainedError, match="no such file or directory"):
        from_pretrained(tmp_path / "missing")
    (tmp_path / "d").mkdir()
    with pytest.raises(PretrainedError, match="neither an export"):
        from_pretrained(tmp_path / "d")


def test_init_from_a_hugging_face_bert_directory(tiny_cfg, tmp_path):
    hf = random_hf_bert(tiny_cfg)
    hf.save_pretrained(tmp_path / "bert")
    model = VLBertForPretraining(tiny_cfg)
    report = init_weights_from(model, tmp_path / "bert")
    assert report.startswith(f"initialised from BERT weights in {tmp_path / 'bert'}")
    assert "new VL parts" in report  # load_hf_bert's report, printed in the run's log
    assert torch.equal(model.vlbert.embeddings.word_embeddings.weight, hf.bert.embeddings.word_embeddings.weight)


@pytest.mark.parametrize("with_masters", [False, True])
def test_stage0_checkpoint_consolidation(tiny_cfg, tmp_path, with_masters):
    model = trained_like(tiny_cfg)
    module = {k: v.clone() for k, v in model.state_dict().items()}
    states = {"module": module, "param_shapes": None, "optimizer": {}}
    if with_masters:  # bf16/fp16 without ZeRO: a rounded module, fp32 masters in our parameter groups' order
        states["module"] = {k: v.to(torch.bfloat16) for k, v in module.items()}
        order = [k for k, v in module.items() if v.dim() >= 2] + [k for k, v in module.items() if v.dim() < 2]
        split = sum(1 for v in module.values() if v.dim() >= 2)
        masters = [module[k] for k in order]
        states["optimizer"] = {"fp32_groups": [masters[:split], masters[split:]]}
    (tmp_path / "step1").mkdir()
    torch.save(states, tmp_path / "step1" / "mp_rank_00_model_states.pt")
    with pytest.raises(CheckpointError, match="has no checkpoint.json: .* --trust-foreign"):
        consolidated_state_dict(tmp_path / "step1")  # made by hand: no manifest, so only when trusted
    got = consolidated_state_dict(tmp_path / "step1", trust_foreign=True)
    assert all(got[k].dtype == torch.float32 and torch.equal(got[k], v) for k, v in module.items())
