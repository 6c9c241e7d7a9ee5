"""RefCOCO+ (referring expressions), as the original VL-BERT fine-tunes and evaluates it.

Input per sentence: `[CLS] expression [SEP]` + the RoIs (the whole image first, then the protocol's boxes: the
image's COCO annotation boxes, or the detections, or both when training the detected-box model); every text token
adds the whole image's visual feature. Head on each RoI token: Dense(H -> H) + GELU (initialised from the
pretraining masked-RoI head's transform, as the original maps `mvrc_head.transform` onto it), Dropout, Linear(H ->
1). Label of a RoI: IoU(RoI, target) > 0.5; loss: binary cross-entropy averaged over the batch's RoIs. Prediction:
the box of the highest-scoring RoI; accuracy: IoU(predicted box, target) >= 0.5 (boxes.py).

Legend: S samples (one row each), L tokens per row, H hidden, K RoIs in the batch, R RoIs per sample (padded).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ...config.finetune_run import FinetuneConfig
from ...data.collate import Example
from ...data.formats import FormatError
from ...data.formats.paths import under
from ...tokenization import Tokenizer
from ...vocabulary import TokenKind
from ..base import TaskBatch, TaskSample
from .boxes import box_iou, clip_boxes, is_hit, region_labels
from .refer import Instances, Ref, Sentence, read_detections, read_instances, read_refs
from .roi_features import RegionStore
from .synth import cached_refcoco

SPLITS = ("train", "val", "testA", "testB", "test")
"""Our split names; "test" is testA + testB (the refer toolkit's reading of it)."""
PAD_LABEL = -1.0


class RefCOCOHead(nn.Module):
    """Per-RoI logit (module docstring). `forward(hidden_BLH, task_batch) -> [S, R]`, -inf where a sample has fewer
    than R RoIs. Every submodule runs on every call, also on zero RoIs: DeepSpeed ZeRO-3 gathers a module's
    parameters in its forward hooks, and every rank must take part in every gather."""

    def __init__(self, hidden_size: int, dropout: float = 0.0):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, 1)
        for linear in (self.dense, self.classifier):  # the original's init of its final MLP
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, hidden_BLH: torch.Tensor, task_batch: TaskBatch) -> torch.Tensor:
        batch = task_batch.batch
        roi_BL = batch.token_kind == TokenKind.ROI
        region_K = batch.visual_index[roi_BL]  # row-major: the batch's regions in order, each once
        x_KH = F.gelu(self.dense(hidden_BLH[roi_BL]))
        logit_K = self.classifier(self.dropout(x_KH)).squeeze(-1)
        samples = batch.input_ids.shape[0]
        counts_S = torch.bincount(batch.region_sample, minlength=samples)
        width = int(counts_S.max()) if samples else 0
        starts_S = torch.cumsum(counts_S, 0) - counts_S
        sample_K = batch.region_sample[region_K]
        logits_SR = logit_K.new_full((samples, width), float("-inf"))
        return logits_SR.index_put((sample_K, region_K - starts_S[sample_K]), logit_K)


class RefCOCODataset(Dataset):
    """The samples of one split, built on demand (one per sentence)."""

    def __init__(self, task: RefCOCOTask, items: list[tuple[Ref, int]], protocol: str, split: str):
        self.task, self.items, self.protocol, self.split = task, items, protocol, split

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> TaskSample:
        ref, k = self.items[index]
        return self.task.sample(ref, ref.sentences[k], self.protocol, f"{self.split} sample {index}")


class RefCOCOTask:
    """The RefCOCO+ task (tasks/base.py `Task`), built from a FinetuneConfig's `refcoco` options and model."""

    name = "refcoco"
    EMBEDDED_DEFAULT: dict = {
        "train": {"epochs": 3, "global_batch_size": 32, "micro_batch_size": 32, "lr": 1e-3, "warmup_steps": 20},
    }
    """Overrides for `vlbert-fast finetune --task refcoco` with no config: the synthetic RefCOCO+ (ground-truth boxes,
    800 training images, about 3500 expressions) from the embedded pretraining run's checkpoint, 3 epochs of 32
    expressions per step (about 330 steps), under a minute of training on 2 idle CPU cores."""

    def __init__(self, cfg: FinetuneConfig, run_dir: str | Path | None = None, cache_dir: str | Path | None = None):
        self.cfg = cfg
        self.opts = options = cfg.refcoco
        if cfg.model.visual.end_to_end:
            raise ValueError(
                "RefCOCO+ fine-tuning reads precomputed region features; model.visual.mode=e2e is not wired in"
            )
        self.hidden_size = cfg.model.hidden_size
        if options.root:
            self.root = Path(options.root)
        else:
            self.root = cached_refcoco(
                options.synth,
                options.synth_train_images,
                options.synth_eval_images,
                cache_dir,
                with_world_tokenizer=True,
            )
        if not self.root.is_dir():
            raise FileNotFoundError(f"refcoco.root {self.root} is not a directory")
        self.tokenizer = Tokenizer(self.path("tokenizer"))
        if self.tokenizer.vocab_size != cfg.model.vocab_size:
            raise ValueError(
                f"the tokenizer at {self.path('tokenizer')} has {self.tokenizer.vocab_size} tokens but "
                f"model.vocab_size is {cfg.model.vocab_size}: expressions must be tokenised as in pretraining"
            )
        self._refs: list[Ref] | None = None
        self._instances: Instances | None = None
        self._detections: dict[int, np.ndarray] | None = None
        self._store: RegionStore | None = None

    # -- the files, read once -------------------------------------------------------------------------------------

    def path(self, name: str) -> Path:
        return under(self.root, getattr(self.opts, name))

    @property
    def refs(self) -> list[Ref]:
        if self._refs is None:
            refs, instances = read_refs(self.path("refs")), self.instances
            for ref in refs:
                ann = instances.annotations.get(ref.ann_id)
                if ann is None or ann.image_id != ref.image_id or ref.image_id not in instances.images:
                    raise FormatError(
                        os.fspath(self.path("refs")),
                        f"ref_id {ref.ref_id}",
                        "ann_id",
                        f"an annotation of image {ref.image_id} in {self.path('instances')}",
                        f"ann_id {ref.ann_id}" + ("" if ann is None else f" (of image {ann.image_id})"),
                    )
            self._refs = refs
        return self._refs

    @property
    def instances(self) -> Instances:
        if self._instances is None:
            self._instances = read_instances(self.path("instances"))
        return self._instances

    @property
    def detections(self) -> dict[int, np.ndarray]:
        if self._detections is None:
            self._detections = read_detections(self.path("detections"))
        return self._detections

    @property
    def store(self) -> RegionStore:
        if self._store is None:
            self._store = RegionStore(self.path("features"), self.opts.box_match_tolerance)
        return self._store

    def target_box(self, ref: Ref) -> np.ndarray:
        return np.asarray(self.instances.annotations[ref.ann_id].box, dtype=np.float32)

    # -- the Task protocol ----------------------------------------------------------------------------------------

    def datasets(self, split: str) -> Sequence[TaskSample]:
        if split not in SPLITS:
            raise ValueError(f"refcoco: unknown split {split!r}; expected one of {list(SPLITS)}")
        wanted = ("testA", "testB") if split == "test" else (split,)
        items = [(ref, k) for ref in self.refs if ref.split in wanted for k in range(len(ref.sentences))]
        if not items:
            raise FormatError(os.fspath(self.path("refs")), message=f"no refs of split {split!r}", reason="empty split")
        protocol = self.opts.train_boxes if split == "train" else self.opts.eval_boxes
        return RefCOCODataset(self, items, protocol, split)

    def rois(self, image_id: int, protocol: str, where: str) -> np.ndarray:
        """[N, 4] the protocol's boxes of an image, unclipped, as the files give them."""
        parts = []
        if "detected" in protocol:
            if image_id not in self.detections:
                raise FormatError(os.fspath(self.path("detections")), image_id, message=f"no detections ({where})")
            parts.append(self.detections[image_id])
        if "gt" in protocol:
            anns = self.instances.by_image.get(image_id, [])
            parts.append(np.asarray([self.instances.annotations[a].box for a in anns], np.float32).reshape(-1, 4))
        return np.concatenate(parts)[: self.opts.max_regions]

    def sample(self, ref: Ref, sentence: Sentence, protocol: str, where: str) -> TaskSample:
        """The sample of one sentence of a ref, with the protocol's RoIs."""
        info = self.instances.images[ref.image_id]
        w, h = float(info.width), float(info.height)
        raw = self.rois(ref.image_id, protocol, where)
        features, whole = self.store.features(ref.image_id, raw, where)
        if whole is None:  # as pretraining does without an image-box feature: the mean of the regions
            whole = features.mean(axis=0) if len(features) else np.zeros(features.shape[1], np.float32)
        boxes = np.concatenate([[[0.0, 0.0, w - 1, h - 1]], clip_boxes(raw, w, h)]).astype(np.float32)
        features = np.concatenate([whole[None].astype(np.float32), features])
        target = clip_boxes(self.target_box(ref)[None], w, h)[0]
        ids = self.tokenizer.encode(sentence.tokens).ids[: self.opts.max_expression_len]
        tok = self.tokenizer
        example = Example(
            input_ids=torch.as_tensor([tok.cls_id, *ids, tok.sep_id], dtype=torch.long),
            boxes=torch.from_numpy(boxes),
            image_size=(w, h),
            region_features=torch.from_numpy(features),
            region_masked=torch.zeros(len(boxes), dtype=torch.bool),
        )
        meta = {"ref_id": ref.ref_id, "sent_id": sentence.sent_id, "image_id": ref.image_id, "boxes": boxes}
        return TaskSample([example], {"labels": torch.from_numpy(region_labels(boxes, target))}, meta)

    def build_head(self) -> nn.Module:
        return RefCOCOHead(self.hidden_size, self.opts.classifier_dropout)

    def init_head(self, head: nn.Module, pretraining_state: dict[str, torch.Tensor]) -> list[str]:
        """The head's Dense(H -> H) from the pretraining masked-RoI head's (the original's prefix change
        `vlbert.mvrc_head.transform -> final_mlp.0`); the classifier stays new."""
        found = {}
        for part in ("weight", "bias"):
            keys = [k for k in pretraining_state if k.endswith(f"roi_head.dense.{part}")]
            if len(keys) == 1:
                found[part] = keys[0]
        if len(found) != 2:
            return [
                "head.dense: new (xavier uniform; no roi_head.dense in the pretraining state)",
                "head.classifier: new (xavier uniform)",
            ]
        with torch.no_grad():
            for part, key in found.items():
                value = pretraining_state[key]
                target = getattr(head.dense, part)
                if value.shape != target.shape:
                    raise ValueError(
                        f"refcoco head: {key} has shape {tuple(value.shape)}, head.dense.{part} needs "
                        f"{tuple(target.shape)}"
                    )
                target.copy_(value)
        return [
            f"head.dense <- {found['weight'].removesuffix('.weight')} (the masked-RoI head's transform)",
            "head.classifier: new (xavier uniform)",
        ]

    def collate_targets(self, samples: Sequence[TaskSample]) -> dict[str, torch.Tensor]:
        labels = [s.target["labels"] for s in samples]
        width = max((len(x) for x in labels), default=0)
        out = torch.full((len(labels), width), PAD_LABEL)
        for i, x in enumerate(labels):
            out[i, : len(x)] = x
        return {"labels": out}

    def loss(self, logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        labels = targets["labels"]
        if labels.shape != logits.shape:
            raise ValueError(f"refcoco loss: labels {tuple(labels.shape)} and logits {tuple(logits.shape)} differ")
        valid = labels != PAD_LABEL
        if not bool(valid.any()):  # keeps the graph (ZeRO reduces every parameter's gradient), adds exactly 0
            return logits.masked_fill(~valid, 0.0).sum() * 0.0
        return F.binary_cross_entropy_with_logits(logits[valid].float(), labels[valid].float())

    def predict(self, logits: torch.Tensor, batch: TaskBatch) -> list[dict[str, Any]]:
        best = logits.argmax(dim=1).tolist()
        return [
            {
                "ref_id": m["ref_id"],
                "sent_id": m["sent_id"],
                "image_id": m["image_id"],
                "box": [round(float(v), 2) for v in m["boxes"][k]],
            }
            for m, k in zip(batch.meta, best, strict=True)
        ]

    def metrics(self, predictions: list[dict[str, Any]], split: str) -> dict[str, float]:
        """Accuracy: the share of predictions with IoU(box, the ref's annotation box) >= 0.5 (boxes.py)."""
        by_id = {ref.ref_id: ref for ref in self.refs}
        hits, ious = [], []
        for p in predictions:
            target = self.target_box(by_id[p["ref_id"]])
            hits.append(is_hit(np.asarray(p["box"]), target))
            ious.append(box_iou(np.asarray(p["box"]), target)[0, 0])
        n = len(predictions)
        return {"accuracy": sum(hits) / n if n else 0.0, "mean_iou": float(np.mean(ious)) if n else 0.0}

    def write_predictions(self, predictions: list[dict[str, Any]], split: str, out_dir: Path) -> Path:
        """`refcoco+_<split>.json`: [{ref_id, sent_id, image_id, box: [x1, y1, x2, y2]}] (the original writes
        {ref_id, box} per sentence; sent_id and image_id are added)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"refcoco+_{split}.json"
        path.write_text(json.dumps(predictions) + "\n", encoding="utf-8")
        return path
