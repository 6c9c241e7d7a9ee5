"""Pretraining datasets: image-text samples from Conceptual Captions records and text-only rows from a corpus,
each turned into a masked `Example` (README.md, "The path of one batch").

Image-text sample: caption word pieces and the image's detections (highest confidence first, clipped to the
image), the whole-image region 0 = [0, 0, W-1, H-1] in front; masking (data/masking.py: words, and regions over
every detection of the record); the whole-image feature: the file's `image_box_feature` when nothing is masked,
else the mean of all the record's unmasked detections (the original's formula, before truncation); then truncation
to `max_regions` detections and to `max_seq_len` (text + regions; the longer part gives way: the lowest-confidence
region, or the last word piece before [SEP]).

Text-only row (the original's general corpus, pretrain/data/datasets/general_corpus.py): following corpus lines
joined until `text_only_seq_len` word pieces are filled, whole-word masked, with no [CLS] or [SEP]: the original's
text-only rows are the word pieces alone, closed by [END] (collate.py) like every sample.

End-to-end mode (`visual.mode: e2e`): the sample carries its image instead of region features (data/images.py):
decoded, checked, resized, normalised; the boxes scaled to it, the whole-image box [0, 0, w-1, h-1] of the resized
image in front; flipped with its caption's left/right words when training; masked regions' pixels zeroed after
the flip. The detections' order, truncation and masking draws are those of precomputed mode.

Every draw comes from a Generator seeded by (seed, epoch, index): the same sample masks the same way on any worker,
rank or resumed run. A malformed record raises FormatError naming the file and record, or — with
`on_bad_record: skip` — comes back as `Skipped`, which the collate function passes on for counting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import DataConfig, VisualConfig
from ..tokenization import Tokenizer
from .batch import IGNORE_INDEX, Batch
from .collate import Example, collate
from .formats import (
    CaptionRecord,
    FeatureShards,
    FormatError,
    RegionRecord,
    clip_to_image,
    read_bytes,
    read_region_json,
)
from .images import flip_boxes, prepare_image, swap_left_right, zero_regions
from .masking import RegionMaskConfig, WordMaskConfig, WordMasker, mask_regions, with_whole_image


@dataclass
class Skipped:
    """A record skipped under `on_bad_record: skip`; the error names the caption file, the record and the problem."""

    error: FormatError


def image_id_of(record: CaptionRecord) -> str:
    """The id under which an image's regions are stored: the file stem of its image path (`a.zip@/x/12.jpg` -> 12)."""
    member = record.image.split("@", 1)[-1]
    return PurePosixPath(member.replace("\\", "/")).stem


def word_masker(tokenizer: Tokenizer, cfg: DataConfig) -> WordMasker:
    return WordMasker(
        tokenizer.mask_id,
        tokenizer.vocab_size,
        tokenizer.special_ids(),
        WordMaskConfig(cfg.mlm_probability, cfg.mlm_mask_fraction, cfg.mlm_random_fraction),
    )


class RegionSource:
    """Where region features come from: feature shards (looked up by the record's frcnn spec, then by its image id,
    the stem of its image path), or each record's `frcnn` region JSON."""

    def __init__(self, root: Path, features: str, on_bad_record: str = "raise"):
        self.root = root
        self.shards_dir = root / features if features else None
        self.shards = FeatureShards(self.shards_dir, on_bad_record) if features else None

    def get(self, record: CaptionRecord, source: str) -> RegionRecord:
        if self.shards is not None:
            # Shards converted from caption files are keyed by the frcnn spec; from TSVs and region JSONs, by image id.
            keys = [k for k in (record.feature_key, image_id_of(record)) if k]
            for key in keys:
                if key in self.shards:
                    return self.shards[key]
            raise FormatError(
                f"{source}: none of the keys {keys} (frcnn spec, image id) is in the feature shards at "
                f"{self.shards_dir}",
                reason="not in shards",
            )
        if not record.frcnn:
            raise FormatError(f"{source}: record has no 'frcnn' field and data.features is empty")
        return read_region_json(read_bytes(record.frcnn, self.root), source=f"{self.root / record.frcnn}")


class CaptionDataset(Dataset):
    def __init__(
        self,
        records: list[CaptionRecord],
        regions: RegionSource,
        tokenizer: Tokenizer,
        cfg: DataConfig,
        source: str,
        seed: int = 0,
        masking: bool = True,
        feature_dim: int | None = None,
        num_classes: int | None = None,
        visual: VisualConfig | None = None,
        augment: bool | None = None,
        relationship: bool = False,
    ):
        self.records = records
        self.regions = regions
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.source = source
        self.seed = seed
        self.masking = masking
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.visual = visual if visual is not None and visual.end_to_end else None
        """End-to-end mode: the image pipeline's settings (None: precomputed features)."""
        self.augment = masking if augment is None else augment
        """Training-time image augmentation (the horizontal flip); off for held-out data."""
        self.relationship = relationship
        """The relationship task (model.relationship_head): half of the samples take another record's caption and
        every sample carries its label, 1 matched or 0 mismatched, as the original's data does."""
        self.epoch = 0
        self.masker = word_masker(tokenizer, cfg)
        self.region_masking = RegionMaskConfig(cfg.roi_probability, cfg.roi_mask_fraction)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def lengths(self) -> np.ndarray:
        """Approximate sample lengths for length grouping (caption words + [CLS]/[SEP] + regions + [END])."""
        max_len = self.cfg.max_seq_len
        return np.array([min(len(r.caption) + 2, max_len) for r in self.records], dtype=np.int64)

    def __getitem__(self, index: int) -> Example | Skipped:
        where = f"{self.source}, record {index}"
        try:
            return self.build(self.records[index], self.regions.get(self.records[index], where), index, where)
        except FormatError as err:
            if not str(err).startswith(where):  # a region file's error: say which caption record led to it
                err = FormatError(self.source, index, message=str(err), reason=err.reason)
            if self.cfg.on_bad_record == "skip":
                return Skipped(err)
            raise err from None

    def build(self, record: CaptionRecord, region: RegionRecord, index: int, where: str) -> Example:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        tok = self.tokenizer
        words, image, flip, features = record.caption, None, False, None
        relationship_label = None
        if self.relationship:  # its own stream, so the other draws stay what they were
            words, relationship_label = self._relationship_caption(record, index)
        if self.visual is not None:
            image, boxes, classes = self._image_regions(record, region, where)
            # its own stream, so precomputed mode's draws stay what they were
            flip = self.augment and np.random.default_rng([self.seed, self.epoch, index, 2]).random() < (
                self.visual.flip_prob
            )
            words = swap_left_right(words) if flip else words
        else:
            boxes, features, classes = self._regions(region, where)
        enc = tok.encode(words)
        if not enc.ids:
            raise FormatError(f"{where}: caption {record.caption!r} has no word pieces")
        # truncation: text pieces T0 (+ [CLS], [SEP]) and regions R (the whole image included, at most max_regions
        # detections)
        n_all = boxes.shape[0]
        t0, r = len(enc.ids), min(n_all, 1 + self.cfg.max_regions)
        while t0 + 2 + r > self.cfg.max_seq_len:
            if t0 + 2 >= r and t0 > 1:
                t0 -= 1
            elif r > 1:
                r -= 1
            else:
                break
        ids, word_ids = enc.ids[:t0], enc.word_ids[:t0]
        if self.masking:
            masked_ids, labels = self.masker(ids, word_ids, rng)
        else:
            masked_ids, labels = np.asarray(ids, dtype=np.int64), np.full(t0, IGNORE_INDEX, dtype=np.int64)
        # Regions are masked before truncation, as the original does: every detection of the record may be masked,
        # the whole-image feature is the mean of all its unmasked detections, and in e2e mode every masked
        # detection's pixels are zeroed, kept or not.
        predict, masked = np.zeros(n_all, dtype=bool), np.zeros(n_all, dtype=bool)
        if self.masking and classes is not None:
            predict, masked = mask_regions(n_all, rng, self.region_masking)
        if features is not None and (region.image_box_feature is None or masked.any()):
            features = with_whole_image(features, masked)
        image_size = (float(region.image_w), float(region.image_h))
        if image is not None:
            image_size = (float(image.shape[2]), float(image.shape[1]))
            if flip:
                image, boxes = image.flip(-1), flip_boxes(boxes, image.shape[2])
            zero_regions(image, boxes, masked)  # after the flip: the boxes are where the pixels now are
        boxes, predict, masked = boxes[:r], predict[:r], masked[:r]
        features = features[:r] if features is not None else None
        classes = classes[:r] if classes is not None else None
        return Example(
            input_ids=torch.as_tensor(np.concatenate([[tok.cls_id], masked_ids, [tok.sep_id]]), dtype=torch.long),
            mlm_labels=torch.as_tensor(np.concatenate([[IGNORE_INDEX], labels, [IGNORE_INDEX]]), dtype=torch.long),
            boxes=torch.from_numpy(np.ascontiguousarray(boxes)),
            image_size=image_size,
            image=image,
            region_features=torch.from_numpy(np.ascontiguousarray(features)) if features is not None else None,
            region_masked=torch.from_numpy(np.ascontiguousarray(masked)),
            region_predict=torch.from_numpy(np.ascontiguousarray(predict)),
            roi_targets=torch.from_numpy(np.ascontiguousarray(classes)) if classes is not None else None,
            relationship_label=relationship_label,
        )

    def _relationship_caption(self, record: CaptionRecord, index: int) -> tuple[list[str], int]:
        """(caption, label): with probability 0.5 another record's caption and 0, else the record's own and 1
        (the original's Task #1, caption-image relationship prediction)."""
        rng = np.random.default_rng([self.seed, self.epoch, index, 3])
        if rng.random() >= 0.5 or len(self.records) < 2:
            return record.caption, 1
        other = int(rng.integers(0, len(self.records) - 1))
        other += other >= index  # any record but this one
        return self.records[other].caption, 0

    def _detection_order(self, region: RegionRecord, where: str) -> np.ndarray:
        """Indices of all detections by confidence (max_regions applies with the truncation, after masking);
        checks the soft labels' width."""
        cls = region.classes
        if cls is not None and self.num_classes is not None and cls.shape[1] != self.num_classes:
            raise FormatError(
                f"{where}: soft labels have {cls.shape[1]} classes, model.num_roi_classes is {self.num_classes}"
            )
        return np.argsort(-cls.max(axis=1), kind="stable") if cls is not None else np.arange(region.num_boxes)

    def _image_regions(
        self, record: CaptionRecord, region: RegionRecord, where: str
    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray | None]:
        """(image [3, h, w], boxes with the whole image in front, classes or None) in the resized image's pixels."""
        root = self.regions.root
        order = self._detection_order(region, where)
        prepared = prepare_image(
            read_bytes(record.image, root),
            f"{root / record.image}",
            self.visual,
            (region.image_w, region.image_h),
            region.boxes[order],
        )
        w, h = prepared.size
        boxes = np.concatenate([np.array([[0.0, 0.0, w - 1, h - 1]], dtype=np.float32), prepared.boxes])
        classes = None
        if region.classes is not None:
            cls = region.classes[order].astype(np.float32)
            classes = np.concatenate([np.zeros((1, cls.shape[1]), dtype=np.float32), cls])
        return prepared.pixels, boxes, classes

    def _regions(self, region: RegionRecord, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(boxes, features, classes) with the whole-image region in front (its feature the file's
        `image_box_feature`, else a placeholder `build` fills); every detection by confidence, clipped."""
        feats, cls = region.features, region.classes
        if self.feature_dim is not None and feats.shape[1] != self.feature_dim:
            raise FormatError(
                f"{where}: region features are {feats.shape[1]}-d, model.visual_feature_dim is {self.feature_dim}"
            )
        order = self._detection_order(region, where)
        w, h = float(region.image_w), float(region.image_h)
        det_boxes = clip_to_image(region.boxes[order], w, h, where)  # the rule of every mode
        det_feats = feats[order].astype(np.float32)
        if region.image_box_feature is not None:
            whole = region.image_box_feature.astype(np.float32)
        else:
            whole = np.zeros(feats.shape[1], dtype=np.float32)  # build() puts the detections' mean here
        boxes = np.concatenate([np.array([[0.0, 0.0, w - 1, h - 1]], dtype=np.float32), det_boxes])
        features = np.concatenate([whole[None].astype(np.float32), det_feats])
        classes = None
        if cls is not None:
            classes = np.concatenate([np.zeros((1, cls.shape[1]), dtype=np.float32), cls[order].astype(np.float32)])
        return boxes, features, classes


class TextOnlyDataset(Dataset):
    def __init__(self, lines: list[str], tokenizer: Tokenizer, cfg: DataConfig, seed: int = 0):
        if not lines:
            raise ValueError("text-only corpus is empty")
        self.lines = lines
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.seed = seed
        self.epoch = 0
        self.masker = word_masker(tokenizer, cfg)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, index: int) -> Example:
        rng = np.random.default_rng([self.seed, self.epoch, index, 1])
        budget = self.cfg.text_only_seq_len  # word pieces only: the original puts no [CLS]/[SEP] around them
        ids: list[int] = []
        word_ids: list[int] = []
        line = index
        while len(ids) < budget and line < index + len(self.lines):
            enc = self.tokenizer.encode(self.lines[line % len(self.lines)])
            offset = (max(word_ids) + 1) if word_ids else 0
            ids += enc.ids
            word_ids += [w + offset for w in enc.word_ids]
            line += 1
        ids, word_ids = ids[:budget], word_ids[:budget]
        masked_ids, labels = self.masker(ids, word_ids, rng)
        return Example(
            input_ids=torch.as_tensor(masked_ids, dtype=torch.long),
            mlm_labels=torch.as_tensor(labels, dtype=torch.long),
        )


@dataclass
class LoadedBatch:
    """What the pretraining DataLoader yields: the batch (None if every record was skipped) and the skips."""

    batch: Batch | None
    skipped: list[Skipped]


def collate_pretrain(items: list[Example | Skipped]) -> LoadedBatch:
    examples = [x for x in items if isinstance(x, Example)]
    skipped = [x for x in items if isinstance(x, Skipped)]
    return LoadedBatch(collate(examples) if examples else None, skipped)
