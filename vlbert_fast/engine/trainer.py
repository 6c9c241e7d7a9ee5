"""The pretraining loop on DeepSpeed (`vlbert-fast pretrain`).

One way through: data (data/loader.py) -> Batch on the device -> engine(batch) -> engine.backward -> engine.step,
DeepSpeed doing accumulation, clipping and precision from the JSON our config fills (engine/ds_config.py). Every
`log_every` steps one log line, a metrics.jsonl row and TensorBoard scalars; at the end a checkpoint, the
masked-word evaluation with real and shuffled images, and summary.json.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from pathlib import Path

import torch

from ..config import RunConfig, save_config
from ..data.loader import PretrainData, build_pretrain_data
from ..model import VLBertForPretraining
from ..version import __version__
from .distributed import DistInfo, init_distributed
from .ds_config import deepspeed_config, gradient_accumulation
from .evaluate import masked_word_accuracy
from .flops import batch_training_flops, peak_tflops
from .metrics import MetricsLogger, memory_gb
from .optim import build_optimizer, build_scheduler


class Window:
    """Sums over the steps since the last log line."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.wait = 0.0
        self.samples = 0
        self.tokens = 0
        self.flops = 0.0
        self.loss_sum: dict[str, torch.Tensor] = {}
        self.loss_count: dict[str, int] = defaultdict(int)
        self.micro_steps = 0
        self.grad_norm: float | None = None

    def add_losses(self, total: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        for name, value in {"loss": total, **parts}.items():
            value = value.detach().float()
            self.loss_sum[name] = self.loss_sum[name] + value if name in self.loss_sum else value
            self.loss_count[name] += 1
        self.micro_steps += 1

    def means(self) -> dict[str, float]:
        return {k: float(v) / self.loss_count[k] for k, v in self.loss_sum.items()}


def _sum_over_ranks(values: list[float], device: torch.device) -> list[float]:
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()


def pretrain(cfg: RunConfig) -> dict:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # dataloader workers fork after the tokenizer runs
    info = init_distributed()
    import deepspeed

    run_dir = Path(cfg.run_dir)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    data = build_pretrain_data(cfg, info.rank, info.world_size)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = VLBertForPretraining(cfg.model).to(info.device)
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train)
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(cfg, info.world_size)
    )
    torch.manual_seed(cfg.seed + 1 + info.rank)  # dropout differs per rank
    dtype = torch.bfloat16 if cfg.train.precision == "bf16" else torch.float32
    logger = MetricsLogger(run_dir, info.is_main, cfg.train.max_steps)
    logger.print(
        f"vlbert_fast {__version__} | data {data.root} | {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M "
        f"parameters | world size {info.world_size} | accumulation {gradient_accumulation(cfg, info.world_size)} | "
        f"{cfg.train.precision} on {info.device}"
    )
    if model.vlbert.visual is not None and model.vlbert.visual.load_report is not None:  # e2e: what the ResNet loaded
        logger.print(str(model.vlbert.visual.load_report))
    try:
        history = _train(cfg, info, data, engine, dtype, logger)
        summary = _finish(cfg, info, data, engine, dtype, logger, history)
    finally:
        logger.close()
    return summary


def _train(cfg: RunConfig, info: DistInfo, data: PretrainData, engine, dtype, logger: MetricsLogger) -> dict:
    accumulation = gradient_accumulation(cfg, info.world_size)
    epoch, step = 0, 0
    data.set_epoch(epoch)
    batches = iter(data.loader)
    window = Window()
    history: dict = {"first": None, "last": None, "epochs": 0, "skipped": 0}
    begin = time.perf_counter()
    while step < cfg.train.max_steps:
        log_now = (step + 1) % cfg.train.log_every == 0 or step + 1 == cfg.train.max_steps
        for micro in range(accumulation):
            t0 = time.perf_counter()
            loaded = None
            while loaded is None or loaded.batch is None:
                try:
                    loaded = next(batches)
                except StopIteration:
                    _report_skips(data, logger, epoch)
                    epoch += 1
                    data.set_epoch(epoch)
                    batches = iter(data.loader)
                    continue
                for skipped in loaded.skipped:
                    data.counter.handle(skipped.error)
            window.wait += time.perf_counter() - t0
            batch = loaded.batch.to(info.device, dtype=dtype, non_blocking=True)
            out = engine(batch)
            engine.backward(out.loss)
            if log_now and micro == accumulation - 1:
                window.grad_norm = _local_grad_norm(engine.module)  # engine.step() zeroes the gradients
            engine.step()
            window.add_losses(out.loss, out.losses)
            window.samples += batch.num_samples
            window.tokens += int(batch.attention_mask.sum())
            window.flops += batch_training_flops(cfg.model, batch)
        step += 1
        logger.advance(step)
        if step % cfg.train.log_every == 0 or step == cfg.train.max_steps:
            metrics = _window_metrics(window, engine, info, peak_tflops(cfg.train.peak_tflops, info.device))
            logger.log(step, metrics)
            history["last"] = metrics
            history["first"] = history["first"] or metrics
            window = Window()
    history["epochs"] = epoch + 1
    history["seconds"] = time.perf_counter() - begin
    history["steps"] = step
    _report_skips(data, logger, epoch)
    return history


def _local_grad_norm(module: torch.nn.Module) -> float | None:
    """L2 norm of the gradients this rank holds, before clipping. Without ZeRO every rank holds all of them after
    the all-reduce, so it is the global norm; with ZeRO DeepSpeed's own global norm is used instead."""
    norms = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else None


def _window_metrics(window: Window, engine, info: DistInfo, peak: float | None) -> dict:
    elapsed = time.perf_counter() - window.start
    samples, tokens, flops = _sum_over_ranks([window.samples, window.tokens, window.flops], info.device)
    tflops = flops / elapsed / 1e12
    means = window.means()
    loss = means.pop("loss")
    grad = engine.get_global_grad_norm()  # None where DeepSpeed does not track it (fp32 without ZeRO)
    grad = window.grad_norm if grad is None else grad
    return {
        "loss": loss,
        "losses": means,
        "lr": float(engine.get_lr()[0]),
        "grad_norm": None if grad is None else float(grad),
        "samples_per_s": samples / elapsed,
        "tokens_per_s": tokens / elapsed,
        "tflops": tflops,
        "mfu": None if peak is None else tflops / (peak * info.world_size),
        "data_wait_share": window.wait / elapsed,
        "memory_gb": memory_gb(info.device),
    }


def _report_skips(data: PretrainData, logger: MetricsLogger, epoch: int) -> None:
    if data.counter.total:
        logger.print(f"epoch {epoch}: {data.counter.report()}")


def _finish(cfg: RunConfig, info: DistInfo, data: PretrainData, engine, dtype, logger: MetricsLogger, history) -> dict:
    run_dir = Path(cfg.run_dir)
    tag = f"step{history['steps']}"
    engine.save_checkpoint(
        str(run_dir / "checkpoints"),
        tag=tag,
        client_state={"step": history["steps"], "epoch": history["epochs"] - 1, "version": __version__},
    )
    accuracy = None
    if data.val is not None and cfg.train.eval_batches > 0:
        accuracy = masked_word_accuracy(
            engine.module,
            data.val,
            data.probe_words,
            batch_records=max(2, cfg.train.micro_batch_size // 2),
            max_batches=cfg.train.eval_batches,
            device=info.device,
            dtype=dtype,
            seed=cfg.seed,
        )
    summary = {
        "steps": history["steps"],
        "epochs": history["epochs"],
        "train_seconds": history["seconds"],
        "first_losses": {"loss": history["first"]["loss"], **history["first"]["losses"]},
        "final_losses": {"loss": history["last"]["loss"], **history["last"]["losses"]},
        "masked_word_accuracy": accuracy,
        "probe_words": data.probe_words,
        "skipped_records": data.counter.total,
        "checkpoint": str(run_dir / "checkpoints" / tag),
    }
    if info.is_main:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        logger.print(format_summary(summary))
    return summary


def format_summary(s: dict) -> str:
    first, last = s["first_losses"], s["final_losses"]
    parts = ", ".join(f"{k} {v:.3f}" for k, v in last.items() if k != "loss")
    lines = [
        "== summary ==",
        f"trained {s['steps']} steps ({s['epochs']} epochs) in {s['train_seconds']:.0f} s",
        f"loss {first['loss']:.3f} (first log window) -> {last['loss']:.3f} (last: {parts})",
    ]
    acc = s["masked_word_accuracy"]
    if acc is not None:
        what = "colour/shape words" if s["probe_words"] else "masked words"
        lines.append(
            f"masked {what} on {acc['words']} held-out words: {100 * acc['real']:.1f}% with the real images, "
            f"{100 * acc['shuffled']:.1f}% with the images shuffled across the batch"
        )
    if s["skipped_records"]:
        lines.append(f"skipped records: {s['skipped_records']}")
    lines.append(f"checkpoint: {s['checkpoint']}")
    return "\n".join(lines)


__all__ = ["format_summary", "pretrain"]
