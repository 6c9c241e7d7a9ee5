"""The VCR task (tasks/base.py's `Task`): Q->A or QA->R as a 4-way choice with the pooled-[CLS] head.

Splits: "train", "val" (labelled) and "test" (no labels; QA->R conditioned on each of the 4 answers). Loss: cross-
entropy over the 4 choices ("softmax"), or the original configs' per-choice binary cross-entropy ("sigmoid").
Metrics: Q->A accuracy or QA->R accuracy; with `q2a_predictions` (the Q->A run's CSV of the same split) the QA->R
task also reports the joint Q->AR accuracy. Output: this task's half of the leaderboard CSV (tasks/vcr/leaderboard.py;
`merge_leaderboard` joins the two halves into the submission).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...config.finetune_run import FinetuneConfig
from ...data.formats.paths import under
from ...tokenization import Tokenizer
from ..base import TaskBatch, TaskSample
from .dataset import VCRDataset
from .formats import VCRRecord, read_vcr_jsonl
from .head import VCRHead, init_pooler
from .leaderboard import choice_accuracy, predictions_from_csv, q2ar_accuracy, write_task_csv
from .synth import cached_vcr

SPLITS = ("train", "val", "test")


class VCRTask:
    """The VCR task (tasks/base.py `Task`), built from a FinetuneConfig whose `vcr` section holds its options."""

    name = "vcr"
    EMBEDDED_DEFAULT: dict = {
        "train": {
            "optimizer": "adamw",
            "lr": 1e-3,
            "schedule": "linear",
            "warmup_steps": 20,
            "epochs": 1,
            "global_batch_size": 16,
            "micro_batch_size": 16,
            "eval_batch_size": 64,
        }
    }
    """`vlbert-fast finetune --task vcr` with no config: the tiny model on the synthetic Q->A, 1 epoch of 125 steps.
    AdamW, not the original's SGD (configs/finetune/vcr_*.yaml): on the tiny model SGD with momentum at 0.05 had not
    moved off chance after 200 steps where AdamW at 1e-3 was well above it (measured from random initialisation)."""

    def __init__(self, cfg: FinetuneConfig, run_dir: str | Path | None = None, cache_dir: str | Path | None = None):
        self.cfg = cfg
        self.opts = opts = cfg.vcr
        self.model_cfg = cfg.model
        self.root = Path(opts.root) if opts.root else cached_vcr(opts.synth, opts, cache_dir)
        if not self.root.is_dir():
            raise FileNotFoundError(f"vcr.root {self.root} is not a directory")
        self.tokenizer = Tokenizer(under(self.root, opts.tokenizer))
        if self.tokenizer.vocab_size != cfg.model.vocab_size:
            raise ValueError(
                f"the tokenizer at {under(self.root, opts.tokenizer)} has {self.tokenizer.vocab_size} tokens but "
                f"model.vocab_size is {cfg.model.vocab_size}: the text must be tokenised as in pretraining"
            )
        self._records: dict[str, list[VCRRecord]] = {}

    def records(self, split: str) -> list[VCRRecord]:
        if split not in SPLITS:
            raise ValueError(f"vcr: unknown split {split!r}; expected one of {SPLITS}")
        if split not in self._records:
            name = {"train": self.opts.train_file, "val": self.opts.val_file, "test": self.opts.test_file}
            self._records[split] = read_vcr_jsonl(self.root / name[split], labelled=split != "test")
        return self._records[split]

    def datasets(self, split: str) -> VCRDataset:
        m = self.model_cfg
        opts = self.opts
        features = None if m.visual.end_to_end else under(self.root, opts.features)
        return VCRDataset(
            self.records(split), self.root, opts, self.tokenizer, m.visual, m.visual_feature_dim, features
        )

    def build_head(self) -> nn.Module:
        m = self.model_cfg
        return VCRHead(m.hidden_size, self.opts.classifier_dropout, m.initializer_range)

    def init_head(self, head: nn.Module, pretraining_state: dict[str, torch.Tensor]) -> list[str]:
        return init_pooler(head, pretraining_state)

    def collate_targets(self, samples: Sequence[TaskSample]) -> dict[str, torch.Tensor]:
        labelled = ["label" in s.target for s in samples]
        if not any(labelled):
            return {}
        if not all(labelled):
            raise ValueError("vcr: a batch mixes samples with and without labels")
        return {"label": torch.stack([s.target["label"] for s in samples])}

    def loss(self, logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        label_S = targets["label"]
        logits = logits.float()
        if self.opts.loss == "softmax":
            return F.cross_entropy(logits, label_S)
        one_hot = F.one_hot(label_S, logits.shape[1]).to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, one_hot)

    def predict(self, logits: torch.Tensor, batch: TaskBatch) -> list[dict[str, Any]]:
        probs = torch.softmax(logits.float(), dim=-1).tolist()
        return [{**meta, "probs": p} for meta, p in zip(batch.meta, probs, strict=True)]

    def metrics(self, predictions: list[dict[str, Any]], split: str) -> dict[str, float]:
        """Q->A or QA->R accuracy (+ Q->AR with `q2a_predictions`); {} for a split without labels (test)."""
        if all(p["label"] is None for p in predictions):
            return {}
        if self.opts.mode == "q2a":
            return {"q2a_accuracy": choice_accuracy(predictions)}
        given_right = [p for p in predictions if p["label"] is not None]
        out = {"qa2r_accuracy": choice_accuracy(given_right)}
        if self.opts.q2a_predictions:
            labels = {r.annot_id: r.answer_label for r in self.records(split)}
            answers = predictions_from_csv(self.opts.q2a_predictions, labels)
            out["q2a_accuracy"] = choice_accuracy(answers)
            out["q2ar_accuracy"] = q2ar_accuracy(answers, given_right)
        return out

    def write_predictions(self, predictions: list[dict[str, Any]], split: str, out_dir: Path) -> Path:
        return write_task_csv(predictions, Path(out_dir) / f"vcr_{self.opts.mode}_{split}.csv")
