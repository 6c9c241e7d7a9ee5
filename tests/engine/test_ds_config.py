"""The DeepSpeed JSON filled from our config, the engine config's validation, and the fault-injection spec."""

import pytest
import torch

from vlbert_fast.config import ConfigError, RunConfig, load_config
from vlbert_fast.config.finetune_run import FinetuneConfig
from vlbert_fast.engine.ds_config import deepspeed_config, mark_zero3_leaves
from vlbert_fast.engine.faults import FaultInjector, parse


def cfg(*overrides: str) -> RunConfig:
    return load_config(RunConfig, overrides=list(overrides))


def test_batch_sizes_accumulation_precision_clipping():
    c = cfg("train.global_batch_size=64", "train.micro_batch_size=8", "train.grad_clip=2.5", "train.precision=bf16")
    ds = deepspeed_config(c, world_size=2)
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (
        64,
        8,
        4,
    )
    assert ds["gradient_clipping"] == 2.5 and ds["bf16"] == {"enabled": True} and not ds["fp16"]["enabled"]
    assert ds["zero_optimization"] == {"stage": 0} and "optimizer" not in ds and "scheduler" not in ds
    expected = (
        "micro_batch_size 8 x world size 3 = 24; use e.g. train.global_batch_size=48 or train.global_batch_size=72"
    )
    with pytest.raises(ConfigError, match=expected):
        c.train.accumulation(3)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_zero_options(stage):
    c = cfg(f"engine.zero_stage={stage}", "engine.overlap_comm=true", "engine.reduce_bucket_size=1000")
    zero = deepspeed_config(c, 1)["zero_optimization"]
    assert zero["stage"] == stage and zero["overlap_comm"] is True and zero["reduce_bucket_size"] == 1000
    assert ("stage3_param_persistence_threshold" in zero) == (stage == 3)
    assert ("allgather_bucket_size" in zero) == (stage < 3)


def test_fp16_dynamic_loss_scale_and_its_stage0_refusal():
    c = cfg("train.precision=fp16", "engine.zero_stage=1", "engine.fp16_initial_scale_power=12")
    fp16 = deepspeed_config(c, 1)["fp16"]
    assert fp16["enabled"] and fp16["loss_scale"] == 0 and fp16["initial_scale_power"] == 12
    assert (fp16["loss_scale_window"], fp16["hysteresis"], fp16["min_loss_scale"]) == (1000, 2, 1.0)
    with pytest.raises(ConfigError, match="fp16 needs engine.zero_stage >= 1"):
        cfg("train.precision=fp16")
    with pytest.raises(ConfigError, match="fp16 needs engine.zero_stage >= 1"):
        load_config(FinetuneConfig, overrides=["train.precision=fp16"])


def test_universal_loading_switch():
    assert "checkpoint" not in deepspeed_config(cfg(), 1)
    assert deepspeed_config(cfg("engine.load_universal=true"), 1)["checkpoint"] == {"load_universal": True}


@pytest.mark.parametrize(
    "override, message",
    [
        ("engine.zero_stage=4", "zero_stage must be 0, 1, 2 or 3"),
        ("engine.resume=''", "resume must be one of"),
        ("engine.max_nonfinite_steps=0", "max_nonfinite_steps must be >= 1"),
        ("engine.dist_timeout_s=0", "dist_timeout_s must be positive"),
        ("train.precision=fp8", "precision must be 'fp32', 'bf16' or 'fp16'"),
        ("engine.keep_last_k=-1", "keep_last_k must be >= 0"),
    ],
)
def test_engine_config_validation(override, message):
    with pytest.raises(ConfigError, match=message):
        cfg(override)


def test_fault_spec():
    faults = parse("kill step=5 rank=1 where=save; nan steps=2,3")
    assert (faults[0].action, faults[0].steps, faults[0].rank, faults[0].where) == ("kill", {5}, 1, "save")
    assert (faults[1].action, faults[1].steps, faults[1].rank) == ("nan", {2, 3}, None)
    for bad, message in [
        ("explode step=1", "unknown fault 'explode'"),
        ("kill", "names no step"),
        ("kill step=1 colour=red", "unknown condition 'colour=red'"),
        ("kill step=1 where=sideways", "unknown condition .where=sideways."),
        ("kill step", "is not key=value"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse(bad)
    injector = FaultInjector(rank=0, spec="nan steps=2 rank=0; nan steps=3 rank=1")
    loss = torch.tensor(1.5, requires_grad=True)
    assert torch.isnan(injector.loss(loss, 2)) and injector.loss(loss, 3) is loss
    assert injector.loss(loss, 2).requires_grad  # backward still runs through a poisoned loss


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_zero_templates_combine_with_a_run_config(stage):
    c = load_config(RunConfig, ["configs/pretrain/base_prec_8xH100_bf16.yaml", f"configs/zero/zero{stage}.yaml"])
    ds = deepspeed_config(c, world_size=8)
    assert ds["zero_optimization"]["stage"] == stage and ds["bf16"]["enabled"]
    assert ds["train_batch_size"] == 256 and ds["gradient_accumulation_steps"] == 1


def test_example_hostfile_is_what_the_deepspeed_launcher_reads():
    from deepspeed.launcher.runner import fetch_hostfile

    assert dict(fetch_hostfile("examples/hostfile")) == {"node-a": 8, "node-b": 8}


def test_zero3_template_runs_the_packed_encoder():
    c = load_config(RunConfig, ["configs/zero/zero3.yaml"])
    assert c.model.packed and deepspeed_config(c, 1)["zero_optimization"]["stage"] == 3


@pytest.mark.parametrize("stage", [2, 3])
def test_zero3_gathers_the_fused_modules_whole_for_every_job(stage):
    """The pretraining model and a fine-tuning model (VLBertModel and a head) alike: the modules that hand their
    children's parameters to fused ops are ZeRO-3 leaves (gathered whole when they run); nothing is marked below
    stage 3. Fine-tuning marked none until the one engine builder did it for every job."""
    from deepspeed.utils import z3_leaf_module

    from vlbert_fast.model import ZERO3_LEAF_MODULES, VLBertForPretraining
    from vlbert_fast.model.vlbert_finetuning import VLBertForFinetuning

    c = cfg(f"engine.zero_stage={stage}", "train.precision=fp32")
    for model in (VLBertForPretraining(c.model), VLBertForFinetuning(c.model, torch.nn.Linear(4, 2))):
        mark_zero3_leaves(model, c)
        leaves = [m for m in model.modules() if isinstance(m, ZERO3_LEAF_MODULES)]
        assert len(leaves) >= 2 and {type(m).__name__ for m in leaves} >= {"VLBertEmbeddings", "EncoderLayer"}
        assert all(z3_leaf_module(m) == (stage == 3) for m in leaves)
