"""Loading HF BERT checkpoints from directories: formats, names, the report, and loud failures."""

import json

import pytest
import torch
from safetensors.torch import save_file

from vlbert_fast.model import BertLoadError, VLBertForPretraining, VLBertModel, load_hf_bert

from .helpers import random_hf_bert


def test_save_pretrained_directory_and_report(tiny_cfg, tmp_path):
    hf = random_hf_bert(tiny_cfg)
    hf.save_pretrained(tmp_path)
    model = VLBertForPretraining(tiny_cfg)
    report = load_hf_bert(model, tmp_path)
    torch.testing.assert_close(
        model.vlbert.embeddings.word_embeddings.weight, hf.bert.embeddings.word_embeddings.weight
    )
    torch.testing.assert_close(model.mlm_head.bias, hf.cls.predictions.bias)
    assert "mlm_head.bias" in report.loaded and "vlbert.embeddings.token_type_embeddings.weight[:2]" in report.loaded
    assert "vlbert.embeddings.visual_ln_text.weight" in report.missing_expected
    assert "roi_head.classifier.weight" in report.missing_expected
    assert "vlbert.region_encoder.projection.weight" in report.missing_expected
    assert any(n.startswith("cls.seq_relationship") for n in report.unused_known)
    assert any(n.startswith("pooler.") for n in report.unused_known)
    assert report.unexpected == []
    text = str(report)
    assert "new VL parts" in text and "cls.seq_relationship.weight" in text


def test_bertmodel_names_and_old_gamma_beta_into_the_bare_model(tiny_cfg, tmp_path):
    hf = random_hf_bert(tiny_cfg)
    state = {k.removeprefix("bert."): v for k, v in hf.state_dict().items() if k.startswith("bert.")}
    state = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in state.items()
    }
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    model = VLBertModel(tiny_cfg)
    report = load_hf_bert(model, tmp_path)
    torch.testing.assert_close(model.embeddings.layer_norm.weight, hf.bert.embeddings.LayerNorm.weight)
    assert report.unexpected == []


def test_pytorch_bin_and_sharded_safetensors(tiny_cfg, tmp_path):
    hf = random_hf_bert(tiny_cfg)
    state = hf.state_dict()
    (tmp_path / "bin").mkdir()
    torch.save(state, tmp_path / "bin" / "pytorch_model.bin")
    model = VLBertForPretraining(tiny_cfg)
    load_hf_bert(model, tmp_path / "bin")
    torch.testing.assert_close(model.mlm_head.dense.weight, hf.cls.predictions.transform.dense.weight)
    shard_dir = tmp_path / "sharded"
    shard_dir.mkdir()
    names = sorted(state)
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate((names[:half], names[half:])):
        file = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({n: state[n].contiguous().clone() for n in part}, str(shard_dir / file))
        weight_map.update({n: file for n in part})
    (shard_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    model2 = VLBertForPretraining(tiny_cfg)
    load_hf_bert(model2, shard_dir)
    torch.testing.assert_close(
        model2.vlbert.encoder.layers[1].ffn.down.weight, hf.bert.encoder.layer[1].output.dense.weight
    )


def test_missing_weight_fails_loudly(tiny_cfg):
    state = random_hf_bert(tiny_cfg).state_dict()
    del state["bert.encoder.layer.1.attention.self.key.bias"]
    with pytest.raises(BertLoadError, match=r"missing from the source: encoder.layer.1.attention.self.key.bias"):
        load_hf_bert(VLBertForPretraining(tiny_cfg), state)


def test_shape_mismatch_fails_loudly(tiny_cfg):
    state = random_hf_bert(tiny_cfg).state_dict()
    state["bert.encoder.layer.0.intermediate.dense.weight"] = torch.zeros(7, 7)
    with pytest.raises(BertLoadError, match=r"intermediate.dense.weight: shape \(7, 7\) does not match"):
        load_hf_bert(VLBertForPretraining(tiny_cfg), state)


def test_config_mismatch_and_empty_directory(tiny_cfg, tmp_path):
    hf = random_hf_bert(tiny_cfg)
    hf.save_pretrained(tmp_path / "ok")
    cfg = json.loads((tmp_path / "ok" / "config.json").read_text())
    cfg["hidden_size"] = 64
    (tmp_path / "ok" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BertLoadError, match="hidden_size: BERT 64 vs ours 48"):
        load_hf_bert(VLBertForPretraining(tiny_cfg), tmp_path / "ok")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BertLoadError, match="no BERT weights found"):
        load_hf_bert(VLBertForPretraining(tiny_cfg), tmp_path / "empty")


def test_untied_decoder_is_refused(tiny_cfg):
    state = random_hf_bert(tiny_cfg).state_dict()
    state["cls.predictions.decoder.weight"] = state["cls.predictions.decoder.weight"].clone() + 1.0
    with pytest.raises(BertLoadError, match="tied"):
        load_hf_bert(VLBertForPretraining(tiny_cfg), state)


def test_unrecognised_source_weights_are_reported(tiny_cfg):
    state = random_hf_bert(tiny_cfg).state_dict()
    state["bert.adapter.weight"] = torch.zeros(3)
    report = load_hf_bert(VLBertForPretraining(tiny_cfg), state)
    assert report.unexpected == ["adapter.weight"]
