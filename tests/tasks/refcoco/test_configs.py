"""configs/finetune/refcoco_*.yaml load as FinetuneConfigs with the original's RefCOCO+ settings, stated
explicitly (the learning rate as used, the global batch)."""

from pathlib import Path

import pytest

from vlbert_fast.config import load_config
from vlbert_fast.config.finetune_run import FinetuneConfig

CONFIGS = sorted((Path(__file__).parents[3] / "configs" / "finetune").glob("refcoco_*.yaml"))


def test_all_four_are_there():
    assert [p.name for p in CONFIGS] == [
        "refcoco_base_detected_4xH100_fp32.yaml",
        "refcoco_base_gt_4xH100_fp32.yaml",
        "refcoco_large_detected_4xH100_fp32.yaml",
        "refcoco_large_gt_4xH100_fp32.yaml",
    ]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_original_hyperparameters(path):
    cfg = load_config(FinetuneConfig, [path])
    assert cfg.task == "refcoco"
    assert cfg.model.hidden_size == (768 if "_base_" in path.name else 1024)
    t = cfg.train
    assert (t.optimizer, t.lr, t.global_batch_size, t.epochs, t.warmup_steps) == ("adamw", 2.56e-5, 32, 20, 3750)
    assert (t.schedule, t.weight_decay, t.adam_eps, t.grad_clip) == ("linear", 1e-4, 1e-6, 1.0)
    detected = "_detected_" in path.name
    assert (cfg.refcoco.train_boxes, cfg.refcoco.eval_boxes) == (
        ("detected+gt", "detected") if detected else ("gt", "gt")
    )
    assert cfg.refcoco.classifier_dropout == 0.0
