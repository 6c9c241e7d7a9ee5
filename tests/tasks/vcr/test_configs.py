"""The VCR configs load against FinetuneConfig and state the original's optimisation with the batch explicit."""

from pathlib import Path

import pytest

from vlbert_fast.config import load_config
from vlbert_fast.config.finetune_run import FinetuneConfig

CONFIGS = sorted((Path(__file__).parents[3] / "configs" / "finetune").glob("vcr_*.yaml"))


def test_there_are_base_and_large_configs_for_both_modes():
    names = {p.name for p in CONFIGS}
    assert {"vcr_base_q2a_4xH100_fp32.yaml", "vcr_base_qa2r_4xH100_fp32.yaml"} <= names
    assert {"vcr_large_q2a_4xH100_bf16.yaml", "vcr_large_qa2r_4xH100_bf16.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_with_the_originals_schedule(path):
    cfg = load_config(FinetuneConfig, [path])
    assert cfg.task == "vcr" and cfg.vcr.mode in path.name
    t = cfg.train
    assert (t.optimizer, t.momentum, t.weight_decay, t.schedule) == ("sgd", 0.9, 1e-4, "step")
    assert (t.epochs, t.lr_step_epochs, t.lr_step_factor, t.warmup_steps, t.grad_clip) == (20, [14, 18], 0.1, 1000, 10)
    assert t.global_batch_size == 64 and t.lr == pytest.approx(7e-5 * 64)  # the original's per-sample rate x batch
    assert cfg.model.visual.end_to_end and cfg.vcr.mask_size == cfg.model.visual.pooled_size == 14
    assert cfg.model.hidden_size == (768 if "base" in path.name else 1024)
