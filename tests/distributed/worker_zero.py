"""Worker of test_zero_stages.py, one process per rank: for ZeRO-1, -2 and -3 in fp32 and ZeRO-2 in bf16, train two
steps through our engine setup, save through our checkpoint module, export that checkpoint with `vlbert-fast
export`, load it into a fresh engine, take one more step with both engines. Rank 0 writes what it saw to
OUT/results.json; the test asserts.

usage: python worker_zero.py CONFIG.yaml OUT_DIR   (RANK, WORLD_SIZE, MASTER_* set by the caller)
"""

import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import deepspeed
import torch

from vlbert_fast.cli import main as cli_main
from vlbert_fast.config import RunConfig, load_config
from vlbert_fast.data.pretrain_loader import build_pretrain_data
from vlbert_fast.engine import checkpoint
from vlbert_fast.engine.distributed import barrier, init_distributed
from vlbert_fast.engine.faults import FaultInjector
from vlbert_fast.engine.pretrain_job import pretraining_model
from vlbert_fast.engine.trainer import build_engine
from vlbert_fast.model import from_pretrained

CASES = [(1, "fp32"), (2, "fp32"), (3, "fp32"), (2, "bf16")]


def full_params(engine, stage: int) -> dict[str, torch.Tensor]:
    named = list(engine.module.named_parameters())
    if stage == 3:  # partitioned: gather every parameter whole for the comparison
        with deepspeed.zero.GatheredParameters([p for _, p in named]):
            return {n: p.detach().clone() for n, p in named}
    return {n: p.detach().clone() for n, p in named}


@dataclass
class Built:
    engine: object
    scheduler: object


def build(cfg, info) -> Built:
    """The pretraining model and engine exactly as `vlbert-fast pretrain` builds them (engine/pretrain_job.py)."""
    model, _ = pretraining_model(cfg)
    engine, _, scheduler = build_engine(model.to(info.device), cfg, info, cfg.train.max_steps)
    return Built(engine, scheduler)


def train_step(built, batch) -> None:
    out = built.engine(batch)
    built.engine.backward(out.loss)
    built.engine.step()
    built.scheduler.step()


@torch.no_grad()
def eval_outputs(model, batch) -> list[torch.Tensor]:
    was_training = model.training
    model.eval()  # no dropout: the exported model must give exactly these
    out = model(batch)
    model.train(was_training)
    return [out.loss, out.mlm_logits, out.roi_logits if out.roi_logits is not None else torch.zeros(0)]


def run_stage(config: Path, out_dir: Path, stage: int, precision: str) -> dict:
    name = f"zero{stage}-{precision}"
    overrides = [f"run_dir={out_dir / name}", f"engine.zero_stage={stage}", f"train.precision={precision}"]
    cfg = load_config(RunConfig, [config], overrides)
    info = init_distributed(cfg.engine)
    data = build_pretrain_data(cfg, info.rank, info.world_size)
    data.set_epoch(0)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    batches = [loaded.batch.to(info.device, dtype=dtype) for loaded in itertools.islice(data.loader, 4)]
    trained = build(cfg, info)
    torch.manual_seed(100 + info.rank)
    for batch in batches[:2]:
        train_step(trained, batch)
    state = checkpoint.TrainState(step=2, batch_in_epoch=2)
    tag_dir = checkpoint.save(trained.engine, cfg, info, state, trained.scheduler, 2 * 4, FaultInjector(info.rank, ""))
    saved = full_params(trained.engine, stage)
    engine_outputs = eval_outputs(trained.engine, batches[3])  # every rank: a ZeRO-3 forward is collective

    fresh = build(cfg, info)
    before = full_params(fresh.engine, stage)
    loaded_state, _ = checkpoint.load(fresh.engine, cfg, info, tag_dir, fresh.scheduler)
    after = full_params(fresh.engine, stage)
    torch.manual_seed(200 + info.rank)
    train_step(trained, batches[2])
    torch.manual_seed(200 + info.rank)
    train_step(fresh, batches[2])
    next_trained, next_fresh = full_params(trained.engine, stage), full_params(fresh.engine, stage)

    result = {}
    if info.is_main:
        export_dir = out_dir / f"export-{name}"
        assert cli_main(["export", str(tag_dir), str(export_dir)]) == 0
        exported_model = from_pretrained(export_dir)
        weights = dict(exported_model.named_parameters())
        export_fp32 = all(p.dtype == torch.float32 for p in weights.values())
        rounds = all(torch.equal(weights[n].detach().to(saved[n].dtype), saved[n]) for n in saved)
        # the export holds the fp32 masters; in the engine's precision it is the engine's model
        exported = eval_outputs(exported_model.to(dtype), batches[3])
        result = {
            "export_fp32": export_fp32,
            "export_rounds_to_engine_weights": rounds,
            "files": sorted(p.name for p in tag_dir.iterdir()),
            "loaded_step": loaded_state.step,
            "loaded_lr": fresh.scheduler.get_last_lr(),
            "saved_lr": trained.scheduler.get_last_lr(),
            "fresh_differed_before_load": any(not torch.equal(saved[n], before[n]) for n in saved),
            "params_equal_after_load": saved.keys() == after.keys()
            and all(torch.equal(saved[n], after[n]) for n in saved),
            "next_step_equal": all(torch.equal(next_trained[n], next_fresh[n]) for n in next_trained),
            "next_step_moved": any(not torch.equal(next_trained[n], saved[n]) for n in saved),
            "export_outputs_equal": all(torch.equal(a, b) for a, b in zip(engine_outputs, exported, strict=True)),
            "export_max_abs_diff": max(
                float((a - b).abs().max()) if a.numel() else 0.0 for a, b in zip(engine_outputs, exported, strict=True)
            ),
        }
    barrier()
    return result


def main() -> None:
    config, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    results = {f"{stage}-{p}": run_stage(config, out_dir, stage, p) for stage, p in CASES}
    if results["1-fp32"]:
        (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    torch.distributed.destroy_process_group()  # before the interpreter's finalization (engine/distributed.py)


if __name__ == "__main__":
    main()
