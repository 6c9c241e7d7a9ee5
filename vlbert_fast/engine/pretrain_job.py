"""Pretraining as a job of the one training loop (engine/job.py, engine/trainer.py): `vlbert-fast pretrain`.

Data: image-text rows mixed 1:1 with text-only rows (data/pretrain_loader.py), each micro batch a packed `Batch`;
malformed records are skipped and counted per epoch with `data.on_bad_record=skip`. Model: VLBertForPretraining,
optionally initialised from `engine.init_from` (a BERT directory, as the original, or a run, checkpoint or export of
ours). Loss: the masked-word and masked-RoI losses (and the relationship head's, when on). Evaluation at the end:
masked-word accuracy on held-out captions with the real images and with the images shuffled across the batch
(tasks/masked_word_probe.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..config import RunConfig
from ..data.formats import SkipCounter
from ..data.pretrain_loader import PretrainData, build_pretrain_data
from ..model import VLBertForPretraining
from ..model.flops import batch_training_flops
from ..model.hf_bert import missing_bert_message
from ..model.pretrained import PretrainedError, init_weights_from
from ..tasks.masked_word_probe import masked_word_accuracy
from .distributed import DistInfo, all_gather_objects
from .job import Run
from .trainer import train


def pretraining_model(cfg: RunConfig, init_from: str = "") -> tuple[VLBertForPretraining, list[str]]:
    """The model, seeded alike on every rank, optionally initialised from `init_from`; and what was loaded into it
    (the `init_from` mapping report, the e2e ResNet's weight report)."""
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = VLBertForPretraining(cfg.model)
    reports = [init_weights_from(model, init_from, cfg.engine.trust_foreign)] if init_from else []
    if model.vlbert.visual is not None and model.vlbert.visual.load_report is not None:  # e2e: what the ResNet loaded
        reports.append(str(model.vlbert.visual.load_report))
    return model, reports


class PretrainJob:
    """The pretraining job (module docstring)."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.data_workers = cfg.data.num_workers
        self.data: PretrainData | None = None
        self.epoch_skips = SkipCounter("skip")
        """The distinct records skipped in the current epoch (data.counter holds the run's)."""
        self.accuracy: dict | None = None

    # -- set-up --------------------------------------------------------------------------------------------------

    def initial_weights(self) -> str:
        """engine.init_from, or '' for a random start (train.from_scratch, or no init_from). A named directory that
        is missing is an error saying how to provide it, before any work."""
        cfg = self.cfg
        if cfg.train.from_scratch or not cfg.engine.init_from:
            return ""
        if not Path(cfg.engine.init_from).exists():
            raise PretrainedError(missing_bert_message(cfg.engine.init_from))
        return cfg.engine.init_from

    def build_data(self, info: DistInfo) -> list[str]:
        self.info = info
        self.data = build_pretrain_data(self.cfg, info.rank, info.world_size)
        return self.data.notes

    def build_model(self, info: DistInfo, init_from: str) -> tuple[torch.nn.Module, list[str]]:
        return pretraining_model(self.cfg, init_from)

    def max_steps(self) -> int:
        return self.cfg.train.max_steps

    def steps_per_epoch(self) -> int:
        return self.data.sampler.batches_per_epoch() // self.cfg.train.accumulation(self.info.world_size)

    def data_source(self) -> str:
        return self.cfg.data.root or "the synthetic world, generated into the cache on a first run"

    def describe(self) -> str:
        return f"data {self.data.root}"

    def why_random(self) -> str:
        return "train.from_scratch=true" if self.cfg.train.from_scratch else "engine.init_from is empty"

    # -- the loop ------------------------------------------------------------------------------------------------

    def on_device(self, loaded, run: Run):
        """The micro batch on the device, or None when every row of it was skipped (counted here)."""
        for skipped in loaded.skipped:
            self.epoch_skips.handle(skipped.error)
            self.data.counter.handle(skipped.error)
        return None if loaded.batch is None else loaded.batch.to(run.info.device, dtype=run.dtype, non_blocking=True)

    def forward(self, engine, batch):
        out = engine(batch)
        return out.loss, out.losses

    def measure(self, batch) -> tuple[int, int, float]:
        return batch.num_samples, int(batch.attention_mask.sum()), batch_training_flops(self.cfg.model, batch)

    def evaluate_now(self, step: int) -> bool:
        every = self.cfg.train.eval_every_steps
        return bool(every) and step % every == 0

    def evaluate(self, run: Run, final: bool) -> None:
        """The masked-word probe on held-out captions (tasks/masked_word_probe.py) at the current step, every
        `train.eval_every_steps` and at the end: a metrics.jsonl row ({"step", "time", "val/real", "val/shuffled",
        "val/words"}), TensorBoard scalars and, except at the end (the summary says it), a log line. Nothing without
        a validation split or with train.eval_batches=0. Every rank runs it (under ZeRO-3 the forward gathers
        parameters from all of them)."""
        cfg = self.cfg
        if self.data.val is None or cfg.train.eval_batches <= 0:
            return
        start = time.perf_counter()
        self.accuracy = masked_word_accuracy(
            run.engine.module,
            self.data.val,
            self.data.probe_words,
            batch_records=max(2, cfg.train.micro_batch_size // 2),
            max_batches=cfg.train.eval_batches,
            device=run.info.device,
            dtype=run.dtype,
            seed=cfg.seed,
        )
        run.logger.log_eval(run.state.step, self.accuracy)
        if not final:
            what = "colour/shape words" if self.data.probe_words else "masked words"
            acc = self.accuracy
            run.logger.print(
                f"eval step {run.state.step} | {what} on {acc['words']} held-out words: {100 * acc['real']:.1f}% "
                f"with the real images, {100 * acc['shuffled']:.1f}% shuffled | {time.perf_counter() - start:.1f} s"
            )

    def end_of_epoch(self, run: Run) -> None:
        """The distinct records skipped in the epoch (on this rank); the next epoch counts afresh."""
        if self.epoch_skips.total:
            run.logger.print(f"epoch {run.state.epoch}: {self.epoch_skips.report()}")
        self.epoch_skips = SkipCounter("skip")

    def end_of_training(self, run: Run) -> None:
        self.end_of_epoch(run)
        counters = all_gather_objects(self.data.counter, run.info)  # every rank takes part in the gather
        for other in counters[1:]:
            self.data.counter.merge(other)  # distinct records over every rank (a record two ranks met counts once)

    def summary(self, run: Run) -> tuple[dict, list[str]]:
        state, acc, skipped = run.state, self.accuracy, self.data.counter.total
        first, last = state.first_metrics, state.last_metrics
        own = {
            "epochs": state.epoch + 1,
            "consumed_samples": state.consumed_samples,
            "first_losses": None if first is None else {"loss": first["loss"], **first["losses"]},
            "final_losses": None if last is None else {"loss": last["loss"], **last["losses"]},
            "masked_word_accuracy": acc,
            "probe_words": self.data.probe_words,
            "skipped_records": skipped,
        }
        lines = [f"trained {state.step} steps ({state.epoch + 1} epochs) in {state.train_seconds:.0f} s"]
        if first is not None and last is not None:
            parts = ", ".join(f"{k} {v:.3f}" for k, v in last["losses"].items())
            lines.append(f"loss {first['loss']:.3f} (first log window) -> {last['loss']:.3f} (last: {parts})")
        if acc is not None:
            what = "colour/shape words" if self.data.probe_words else "masked words"
            lines.append(
                f"masked {what} on {acc['words']} held-out words: {100 * acc['real']:.1f}% with the real images, "
                f"{100 * acc['shuffled']:.1f}% with the images shuffled across the batch"
            )
        if skipped:
            lines.append(f"skipped records: {skipped}")
        return own, lines


def pretrain(cfg: RunConfig) -> dict:
    """Runs pretraining with `cfg` on the one training loop; returns the summary."""
    return train(PretrainJob(cfg))
