"""Every shipped multi-GPU config saves checkpoints during its run, by steps and by wall-clock time, so a preempted
run of hours or days loses at most an interval (engine/save_schedule.py)."""

import re
from pathlib import Path

import pytest

from vlbert_fast.config import RunConfig, load_config
from vlbert_fast.config.finetune_run import FinetuneConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MULTI_GPU = re.compile(r"_(\d+)x(H100|H200|A100|16G|32G)")


def multi_gpu_configs() -> list[Path]:
    paths = sorted((CONFIGS / "pretrain").glob("*.yaml")) + sorted((CONFIGS / "finetune").glob("*.yaml"))
    return [p for p in paths if (m := MULTI_GPU.search(p.stem)) and int(m.group(1)) > 1]


def test_the_multi_gpu_configs_are_found():
    names = {p.stem for p in multi_gpu_configs()}
    assert {"base_prec_8xH100_bf16", "large_prec_8xH100_bf16", "base_e2e_8xH100_bf16"} <= names
    assert len([n for n in names if n.startswith(("vqa", "vcr", "refcoco"))]) == 10
    assert "tiny_e2e_cpu_fp32" not in names


@pytest.mark.parametrize("path", multi_gpu_configs(), ids=lambda p: p.stem)
def test_multi_gpu_config_saves_during_the_run(path):
    pretraining = path.parent.name == "pretrain"
    cfg = load_config(RunConfig if pretraining else FinetuneConfig, [path])
    engine = cfg.engine
    assert 0 < engine.save_interval_minutes <= 60, f"{path.name}: engine.save_interval_minutes"
    assert engine.save_interval_steps > 0, f"{path.name}: engine.save_interval_steps"
    if pretraining:  # fine-tuning runs are counted in epochs; their length in steps depends on the data
        assert engine.save_interval_steps <= cfg.train.max_steps // 10, path.name
