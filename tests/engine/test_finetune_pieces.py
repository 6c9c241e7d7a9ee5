"""Pieces of the fine-tuning loop: the config (validation, the loader, a task's embedded default), the sampler's
sharding over ranks, the optimizers and the schedules."""

import pytest
import torch

from vlbert_fast.config import ConfigError, load_config
from vlbert_fast.config.finetune_run import FinetuneConfig, FinetuneTrainConfig
from vlbert_fast.data.sampler import ShuffledBatchSampler
from vlbert_fast.engine.optim import (
    SkippableAdamW,
    SkippableSGD,
    build_optimizer,
    build_scheduler,
)


def test_config_validation_and_loader(tmp_path):
    cfg = load_config(FinetuneConfig, overrides=["task=vcr", "train.optimizer=sgd", "train.lr_step_epochs=[2, 3]"])
    assert cfg.task == "vcr" and cfg.train.lr_step_epochs == [2, 3] and cfg.options is cfg.vcr
    assert cfg.resolved_run_dir == "runs/finetune_vcr" and cfg.run_dir == ""
    with pytest.raises(ConfigError, match="task must be one of"):
        load_config(FinetuneConfig, overrides=["task=gqa"])
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        load_config(FinetuneConfig, overrides=["train.optimizer=lamb"])
    with pytest.raises(ConfigError, match="not a multiple of micro_batch_size"):
        load_config(FinetuneConfig, overrides=["train.global_batch_size=10", "train.micro_batch_size=4"])
    with pytest.raises(ConfigError, match="set init_from"):
        load_config(FinetuneConfig, overrides=["engine.init_from=x"])
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(FinetuneConfig, overrides=["train.lrr=1"])
    # a task's embedded default applies before the YAML files, which apply before the command line
    yaml = tmp_path / "a.yaml"
    yaml.write_text("train:\n  lr: 0.5\n  epochs: 7\n")
    cfg = load_config(
        FinetuneConfig, [yaml], ["train.epochs=9"], defaults=[{"train": {"lr": 0.1, "epochs": 2, "warmup_steps": 3}}]
    )
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.warmup_steps) == (0.5, 9, 3)


def test_cli_task_flag_and_defaults(capsys):
    from vlbert_fast.cli import main

    assert main(["finetune", "--task", "vqa", "--print-config", "train.lr=0.25"]) == 0
    out = capsys.readouterr().out
    assert "task: vqa" in out and "lr: 0.25" in out


@pytest.mark.parametrize(("world", "micro", "global_batch"), [(1, 4, 8), (2, 4, 8), (3, 2, 12)])
def test_sampler_shards_each_global_batch(world, micro, global_batch):
    n = 53
    samplers = [ShuffledBatchSampler(n, micro, global_batch, r, world, seed=5) for r in range(world)]
    per_rank = [list(s) for s in samplers]
    steps, accumulation = samplers[0].steps_per_epoch, samplers[0].accumulation
    assert steps == n // global_batch and all(len(p) == steps * accumulation for p in per_rank)
    for step in range(steps):
        taken = [i for p in per_rank for b in p[step * accumulation : (step + 1) * accumulation] for i in b]
        assert len(taken) == len(set(taken)) == global_batch  # every sample of a global batch once
    every = [i for p in per_rank for b in p for i in b]
    assert len(set(every)) == steps * global_batch  # no sample twice in an epoch
    samplers[0].set_epoch(1)
    assert list(samplers[0]) != per_rank[0]  # another order each epoch
    samplers[0].set_epoch(0, start_batch=3)
    assert list(samplers[0]) == per_rank[0][3:]  # resume: the same order, from the batch it stopped at


def test_optimizers_and_schedules():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    cfg = FinetuneTrainConfig(optimizer="sgd", lr=0.1, momentum=0.8, weight_decay=0.01, warmup_steps=2)
    sgd = build_optimizer(model, cfg)
    assert isinstance(sgd, SkippableSGD) and sgd.defaults["momentum"] == 0.8
    assert [g["weight_decay"] for g in sgd.param_groups] == [0.01, 0.0]  # no decay on biases and LayerNorms
    cfg = FinetuneTrainConfig(lr=0.1, warmup_steps=2, schedule="step", lr_step_epochs=[1, 3], lr_step_factor=0.5)
    sched = build_scheduler(sgd, cfg, max_steps=100, steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append(sgd.param_groups[0]["lr"])
        sgd.step()
        sched.step()
    assert lrs[:3] == pytest.approx([0.0, 0.05, 0.1])
    assert lrs[9] == pytest.approx(0.1) and lrs[10] == pytest.approx(0.05) and lrs[30] == pytest.approx(0.025)
    adamw = build_optimizer(model, FinetuneTrainConfig(lr=0.2, warmup_steps=4))
    assert isinstance(adamw, SkippableAdamW)
    sched = build_scheduler(adamw, FinetuneTrainConfig(lr=0.2, warmup_steps=4), max_steps=12, steps_per_epoch=3)
    lrs = []
    for _ in range(13):
        lrs.append(adamw.param_groups[0]["lr"])
        adamw.step()
        sched.step()
    assert lrs[4] == pytest.approx(0.2) and lrs[8] == pytest.approx(0.1) and lrs[12] == 0.0


@pytest.mark.parametrize("optimizer", [SkippableAdamW, SkippableSGD])
def test_skip_update_changes_nothing_then_steps(optimizer):
    weight = torch.nn.Parameter(torch.ones(3))
    opt = optimizer([weight], lr=0.1, momentum=0.9) if optimizer is SkippableSGD else optimizer([weight], lr=0.1)
    weight.grad = torch.ones(3)
    opt.skip_update = True
    opt.step()
    assert torch.equal(weight, torch.ones(3)) and not opt.state[weight]  # no moment, no step count
    opt.skip_update = False
    opt.step()
    assert bool((weight < 1).all()) and opt.state[weight]
