"""The paper configs carry the original's settings: pretraining starts from a named BERT directory (missing: an
error that says how to provide it; `train.from_scratch=true`: a deliberate random start), every parameter decays, and
VQA Base trains 256 questions per step at 1.6e-4 as the released config does."""

import pytest
import yaml

from tests.shared import output_tail, run_cli
from vlbert_fast.config import RunConfig, load_config
from vlbert_fast.config.finetune_run import FinetuneConfig
from vlbert_fast.engine.pretrain_job import PretrainJob
from vlbert_fast.model.pretrained import PretrainedError

PRETRAIN = {
    "configs/pretrain/base_prec_8xH100_bf16.yaml": "pretrained/bert-base-uncased",
    "configs/pretrain/base_e2e_8xH100_bf16.yaml": "pretrained/bert-base-uncased",
    "configs/pretrain/large_prec_8xH100_bf16.yaml": "pretrained/bert-large-uncased",
}


@pytest.mark.parametrize(("path", "bert"), PRETRAIN.items())
def test_pretraining_configs_name_their_bert_directory(path, bert):
    cfg = load_config(RunConfig, [path])
    assert cfg.engine.init_from == bert and not cfg.train.from_scratch
    assert cfg.train.weight_decay_all and cfg.train.weight_decay == 1e-4


def test_missing_bert_directory_says_what_to_put_there(tmp_path):
    cfg = load_config(RunConfig, ["configs/pretrain/base_prec_8xH100_bf16.yaml"], [f"engine.init_from={tmp_path}/b"])
    with pytest.raises(PretrainedError) as err:
        PretrainJob(cfg).initial_weights()
    message = str(err.value)
    assert f"engine.init_from={tmp_path}/b: no such directory" in message
    assert "save_pretrained" in message and "config.json" in message and "train.from_scratch=true" in message
    scratch = load_config(RunConfig, ["configs/pretrain/base_prec_8xH100_bf16.yaml"], ["train.from_scratch=true"])
    assert PretrainJob(scratch).initial_weights() == ""  # a deliberate random start does not look for the directory
    (tmp_path / "b").mkdir()
    assert PretrainJob(cfg).initial_weights() == f"{tmp_path}/b"


def test_pretrain_command_stops_before_any_work_when_bert_is_missing(tmp_path):
    result = run_cli(
        [
            "pretrain",
            "--config",
            "configs/pretrain/base_prec_8xH100_bf16.yaml",
            f"run_dir={tmp_path / 'run'}",
            f"engine.init_from={tmp_path / 'bert-base-uncased'}",
        ],
        tmp_path / "cache",
        timeout=120,
    )
    assert result.returncode == 2, output_tail(result)
    assert "BertForPreTraining.from_pretrained('bert-base-uncased').save_pretrained" in result.stderr
    assert not (tmp_path / "cache").exists()  # no synthetic world, no data read


def test_vqa_base_config_trains_256_at_1_6e_4(tmp_path):
    args = ["finetune", "--task", "vqa", "--config", "configs/finetune/vqa_base_4x16G_fp32.yaml", "--print-config"]
    result = run_cli(args, tmp_path / "cache", timeout=120)
    assert result.returncode == 0, output_tail(result)
    train = yaml.safe_load(result.stdout)["train"]
    assert (train["global_batch_size"], train["micro_batch_size"], train["lr"]) == (256, 64, 1.6e-4)
    assert train["weight_decay_all"] is True


def test_finetune_configs_decay_every_parameter():
    from pathlib import Path

    for path in sorted(Path("configs/finetune").glob("*.yaml")):
        assert load_config(FinetuneConfig, [path]).train.weight_decay_all, path


@pytest.mark.parametrize(
    ("overlay", "roi", "text_rows", "relationship"),
    [
        ("table4_a_mlm_only", 0.0, 0.0, False),
        ("table4_b_without_text_corpus", 0.15, 0.0, False),
        ("table4_c_with_relationship", 0.15, 0.0, True),
    ],
)
def test_table4_ablation_overlays(overlay, roi, text_rows, relationship):
    base = "configs/pretrain/base_prec_8xH100_bf16.yaml"
    cfg = load_config(RunConfig, [base, f"configs/ablation/{overlay}.yaml"])
    assert (cfg.data.roi_probability, cfg.data.text_only_fraction) == (roi, text_rows)
    assert cfg.model.relationship_head is relationship and cfg.run_dir == f"runs/{overlay}"
    assert cfg.engine.init_from == "pretrained/bert-base-uncased" and cfg.model.hidden_size == 768  # the rest: Base's
