"""Fine-tuning on a task as a job of the one training loop (engine/job.py, engine/trainer.py): `vlbert-fast finetune`.

The task (tasks/: VQA v2, RefCOCO+, VCR; tasks/base.py `Task`) gives the samples, collates them into a TaskBatch
around the packed `Batch`, builds the head, computes the loss, predicts and scores with its official metric. The
model is VLBertModel + the task's head (model/vlbert_finetuning.py), initialised from a pretraining run, checkpoint
or export (or a BERT directory) with a key-mapping report. Every rank takes its own micro batches of each global batch
(data/sampler.py `ShuffledBatchSampler`); evaluation runs every `train.eval_every_steps` (0: at the end of every
epoch) and at the end on the task's val split, each rank predicting its share (tasks/finetuned.py) and the shares
gathered here. At the end the val predictions are written in the task's official format.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from ..config.finetune_run import FinetuneConfig
from ..model.flops import batch_training_flops
from ..model.pretrained import PretrainedError
from ..model.vlbert_finetuning import build_finetune_model
from ..tasks import build_task
from ..tasks.finetuned import predict_share
from ..tasks.task_loader import build_task_data
from .distributed import DistInfo, all_gather_objects, barrier
from .job import Run
from .trainer import train


def _init_message(problem: Exception | str) -> str:
    return (
        f"{problem}\ninit_from must name a pretraining run, checkpoint or export of ours (or a BERT directory): run "
        f"`vlbert-fast pretrain` first (it writes runs/pretrain), set init_from=PATH, or init_from='' to fine-tune "
        f"from random weights"
    )


class FinetuneJob:
    """Fine-tuning on `cfg.task` (module docstring)."""

    def __init__(self, cfg: FinetuneConfig):
        self.cfg = cfg
        self.data_workers = cfg.train.num_workers
        self.evals: list[dict] = []
        self.final: dict = {}

    # -- set-up --------------------------------------------------------------------------------------------------

    def initial_weights(self) -> str:
        cfg = self.cfg
        if cfg.init_from and not Path(cfg.init_from).exists():  # say so before any work
            raise PretrainedError(_init_message(f"init_from={cfg.init_from}: no such file or directory"))
        return cfg.init_from

    def build_data(self, info: DistInfo) -> list[str]:
        cfg = self.cfg
        # The main rank first: it generates the synthetic data and writes the answer vocabulary the others then read.
        if not info.is_main:
            barrier()
        self.task = build_task(cfg, Path(cfg.run_dir))
        if info.is_main:
            barrier()
        self.data = build_task_data(self.task, cfg, info.rank, info.world_size)
        return []

    def build_model(self, info: DistInfo, init_from: str) -> tuple[torch.nn.Module, list[str]]:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)  # the same fresh head on every rank
        try:
            model, report = build_finetune_model(cfg.model, self.task, init_from, cfg.engine.trust_foreign)
        except (PretrainedError, FileNotFoundError) as exc:
            raise PretrainedError(_init_message(exc)) from exc
        return model, [] if report is None else [str(report)]

    def max_steps(self) -> int:
        return self.cfg.train.max_steps or self.cfg.train.epochs * self.steps_per_epoch()

    def steps_per_epoch(self) -> int:
        return self.data.sampler.steps_per_epoch  # optimizer steps

    def data_source(self) -> str:
        return f"{self.cfg.task}; the synthetic task is generated into the cache on a first run"

    def describe(self) -> str:
        trainval = getattr(self.task.opts, "trainval", False)
        held_out = " (trainval: val is also trained on, not held out)" if trainval else ""
        return (
            f"finetune {self.cfg.task} on {self.task.root} | train {len(self.data.train_set)}, val "
            f"{len(self.data.val_set)} samples{held_out} | {self.steps_per_epoch()} steps per epoch"
        )

    def why_random(self) -> str:
        return "init_from is empty: every weight starts from random initialisation"

    # -- the loop ------------------------------------------------------------------------------------------------

    def on_device(self, task_batch, run: Run):
        return task_batch.to(run.info.device, run.dtype)

    def forward(self, engine, task_batch):
        loss = self.task.loss(engine(task_batch), task_batch.targets)
        return loss, {self.cfg.task: loss}

    def measure(self, task_batch) -> tuple[int, int, float]:
        b = task_batch.batch
        return len(task_batch.meta), int(b.attention_mask.sum()), batch_training_flops(self.cfg.model, b)

    def evaluate_now(self, step: int) -> bool:
        return step % (self.cfg.train.eval_every_steps or self.steps_per_epoch()) == 0

    def evaluate(self, run: Run, final: bool) -> None:
        """Predictions on the val split (every rank its share), the task's official metric: a log line, a
        metrics.jsonl row, TensorBoard scalars; at the end also the predictions in the task's official format."""
        engine, cfg, state, logger = run.engine, self.cfg, run.state, run.logger
        engine.eval()
        start = time.perf_counter()
        info, train = run.info, cfg.train
        share = predict_share(
            engine, self.task, self.data.val_set, info.rank, info.world_size, train.eval_batch_size, info.device,
            run.dtype, train.num_workers,
        )  # fmt: skip
        gathered = sorted((record for part in all_gather_objects(share, info) for record in part), key=lambda r: r[0])
        predictions = [prediction for _, prediction in gathered]
        engine.train()
        metrics = self.task.metrics(predictions, "val")
        row = {"step": state.step, "epoch": state.step / self.steps_per_epoch(), "split": "val", **metrics}
        self.evals.append(row)
        text = ", ".join(f"{k} {100 * v:.2f}%" for k, v in metrics.items())
        logger.print(
            f"eval step {state.step} (epoch {row['epoch']:.2f}) | val ({len(predictions)} samples): {text} | "
            f"{time.perf_counter() - start:.1f} s"
        )
        logger.log_eval(state.step, metrics, epoch=row["epoch"])
        if final:
            if logger.enabled:  # the main rank writes the predictions
                out = Path(cfg.run_dir) / "predictions"
                row["predictions"] = str(self.task.write_predictions(predictions, "val", out))
            self.final = row

    def end_of_epoch(self, run: Run) -> None:
        pass

    def end_of_training(self, run: Run) -> None:
        pass

    def summary(self, run: Run) -> tuple[dict, list[str]]:
        cfg, state = self.cfg, run.state
        first, last = state.first_metrics, state.last_metrics
        own = {
            "task": cfg.task,
            "epochs": state.step / self.steps_per_epoch(),
            "train_samples": len(self.data.train_set),
            "val_samples": len(self.data.val_set),
            "first_loss": None if first is None else first["loss"],
            "final_loss": None if last is None else last["loss"],
            "val": {k: v for k, v in self.final.items() if k not in ("step", "epoch", "split", "predictions")},
            "evals": self.evals,
            "predictions": self.final.get("predictions"),
            "init_from": cfg.init_from if run.resumed_from is None else None,
        }
        lines = [
            f"fine-tuned {cfg.task} for {state.step} steps ({own['epochs']:.2f} epochs) in {state.train_seconds:.0f} "
            f"s; loss {own['first_loss']:.3f} (first log window) -> {own['final_loss']:.3f}",
            "val: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in own["val"].items()),
            f"predictions: {own['predictions']}",
        ]
        return own, lines


def finetune(cfg: FinetuneConfig) -> dict:
    """Runs fine-tuning with `cfg` on the one training loop; returns the summary (also run_dir/summary.json)."""
    return train(FinetuneJob(dataclasses.replace(cfg, run_dir=cfg.resolved_run_dir)))
