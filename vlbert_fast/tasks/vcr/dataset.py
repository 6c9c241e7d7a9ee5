"""VCR samples: each annotation becomes 4 rows, one per choice, over the image's regions.

Q->A row:  [CLS] question [SEP] answer_i [SEP]               (token type 0 up to the first [SEP], 1 after)
QA->R row: [CLS] question answer [SEP] rationale_i [SEP]     (the answer: the right one; in the test split each
                                                              of the 4, one sample per answer)
Regions: 0 = the whole image [0, 0, W-1, H-1], then object i as region i + 1 (all objects, in the metadata's order,
boxes clipped to the image). A word piece of an object's name adds that object's visual feature
(`Example.text_visual_index`), every other piece the whole image's (tasks/vcr/text.py).

Truncation (the original's rule, `max_text_len` pieces without the specials): Q->A pops the last piece of the
answer while it is longer than the question, else of the question (the question shared by the 4 rows); QA->R pops
the rationale while it is longer than question + answer, else the question down to one piece, then the answer.

Appearance: precomputed mode reads the feature shards (keyed by img_fn, one row per metadata box; the whole image:
the shard's image-box feature or the mean of the boxes'); end-to-end mode reads the image and rasterises each
object's polygons into a mask (tasks/vcr/masks.py; the whole image's mask is all ones).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ...config import VisualConfig
from ...config.tasks import VCROptions
from ...data.collate import Example
from ...data.formats import FeatureShards, FormatError, clip_to_image, read_bytes
from ...data.images import prepare_image
from ...tokenization import Tokenizer
from ..base import TaskSample
from .formats import NUM_CHOICES, VCRMetadata, VCRRecord, read_metadata
from .masks import instance_masks
from .text import TaggedText, encode_tagged, object_names


def truncate_q2a(question: TaggedText, answers: list[TaggedText], limit: int) -> tuple[TaggedText, list[TaggedText]]:
    q, out = question, []
    for a in answers:
        while len(q) + len(a) > limit:
            if len(a) > len(q):
                a = a.truncated(len(a) - 1)
            else:
                q = q.truncated(len(q) - 1)
        out.append(a)
    return q, out


def truncate_qa2r(
    question: TaggedText, answer: TaggedText, rationale: TaggedText, limit: int
) -> tuple[TaggedText, TaggedText, TaggedText]:
    q, a, r = question, answer, rationale
    while len(q) + len(a) + len(r) > limit:
        if len(r) > len(q) + len(a):
            r = r.truncated(len(r) - 1)
        elif len(q) > 1:
            q = q.truncated(len(q) - 1)
        else:
            a = a.truncated(len(a) - 1)
    return q, a, r


def row_tokens(query: TaggedText, response: TaggedText, cls_id: int, sep_id: int) -> tuple[list, list, list]:
    """(ids, token types, regions) of `[CLS] query [SEP] response [SEP]`; specials take the whole image."""
    ids = [cls_id, *query.ids, sep_id, *response.ids, sep_id]
    types = [0] * (len(query) + 2) + [1] * (len(response) + 1)
    regions = [0, *query.regions, 0, *response.regions, 0]
    return ids, types, regions


class VCRDataset(Dataset):
    """`TaskSample`s of one split (module docstring)."""

    def __init__(
        self,
        records: list[VCRRecord],
        root: Path,
        options: VCROptions,
        tokenizer: Tokenizer,
        visual: VisualConfig | None = None,
        feature_dim: int | None = None,
        features: Path | None = None,
    ):
        self.records = records
        self.root = root
        self.options = options
        self.tokenizer = tokenizer
        self.visual = visual if visual is not None and visual.end_to_end else None
        self.feature_dim = feature_dim
        if self.visual is not None and options.mask_size != self.visual.pooled_size:
            raise ValueError(
                f"vcr.mask_size {options.mask_size} must equal model.visual.pooled_size {self.visual.pooled_size}"
            )
        self.shards = None if self.visual is not None else FeatureShards(features or root / options.features)
        # (record, the answer a QA->R sample is conditioned on): Q->A and labelled QA->R, one sample per record;
        # unlabelled QA->R (test), one per answer, as the leaderboard CSV needs the rationales given each answer
        self.index: list[tuple[int, int | None]] = []
        for i, rec in enumerate(records):
            if options.mode == "q2a":
                self.index.append((i, None))
            elif rec.answer_label is not None:
                self.index.append((i, rec.answer_label))
            else:
                self.index.extend((i, a) for a in range(NUM_CHOICES))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> TaskSample:
        i, answer = self.index[index]
        rec = self.records[i]
        spec = f"{self.options.images}/{rec.metadata_fn}"
        meta = read_metadata(read_bytes(spec, self.root), f"{self.root / spec} (for {rec.source})")
        if len(meta.boxes) != len(rec.objects):
            raise FormatError(
                rec.source,
                None,
                "objects",
                f"{len(meta.boxes)} objects (the boxes of {rec.metadata_fn})",
                f"{len(rec.objects)}",
            )
        regions = self.regions(rec, meta)
        rows = [Example(**self.tokens(*row), **regions) for row in self.text_rows(rec, answer)]
        label = rec.answer_label if self.options.mode == "q2a" else rec.rationale_label
        target = {} if label is None else {"label": torch.tensor(label, dtype=torch.long)}
        info = {"annot_id": rec.annot_id, "mode": self.options.mode, "conditioned_on": answer, "label": label}
        return TaskSample(rows=rows, target=target, meta=info)

    def text_rows(self, rec: VCRRecord, answer: int | None) -> list[tuple[TaggedText, TaggedText]]:
        """(query, response) of each of the 4 rows, truncated."""
        names = object_names(rec.objects)
        tok, limit = self.tokenizer, self.options.max_text_len
        question = encode_tagged(rec.question, names, tok)
        if self.options.mode == "q2a":
            q, answers = truncate_q2a(question, [encode_tagged(a, names, tok) for a in rec.answer_choices], limit)
            return [(q, a) for a in answers]
        given = encode_tagged(rec.answer_choices[answer], names, tok)
        rows = []
        for r in rec.rationale_choices:
            q, a, r = truncate_qa2r(question, given, encode_tagged(r, names, tok), limit)
            rows.append((q + a, r))
        return rows

    def tokens(self, query: TaggedText, response: TaggedText) -> dict:
        ids, types, regions = row_tokens(query, response, self.tokenizer.cls_id, self.tokenizer.sep_id)
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "token_type_ids": torch.tensor(types, dtype=torch.long),
            "text_visual_index": torch.tensor(regions, dtype=torch.long),
        }

    def regions(self, rec: VCRRecord, meta: VCRMetadata) -> dict:
        """The region fields every row of the sample shares: boxes with the whole image first, its size, and the
        appearance (features) or the image and masks (end to end)."""
        w, h = meta.width, meta.height
        boxes = np.asarray(meta.boxes, dtype=np.float32).reshape(-1, 4)
        region_masked = torch.zeros(len(boxes) + 1, dtype=torch.bool)
        if self.visual is not None:
            spec = f"{self.options.images}/{rec.img_fn}"
            prepared = prepare_image(read_bytes(spec, self.root), str(self.root / spec), self.visual, (w, h), boxes)
            pw, ph = prepared.size
            whole = np.array([[0.0, 0.0, pw - 1, ph - 1]], dtype=np.float32)
            size = self.options.mask_size
            masks = torch.cat([torch.ones(1, size, size), instance_masks(meta.segms, meta.boxes, size)])
            return {
                "boxes": torch.from_numpy(np.concatenate([whole, prepared.boxes])),
                "image_size": (float(pw), float(ph)),
                "image": prepared.pixels,
                "region_masks": masks,
                "region_masked": region_masked,
            }
        features = self.features(rec, len(boxes))
        spec = f"{self.options.images}/{rec.metadata_fn}"
        clipped = clip_to_image(boxes, w, h, f"{self.root / spec} (for {rec.source})")  # every mode's rule
        whole = np.array([[0.0, 0.0, w - 1, h - 1]], dtype=np.float32)
        return {
            "boxes": torch.from_numpy(np.concatenate([whole, clipped]).astype(np.float32)),
            "image_size": (float(w), float(h)),
            "region_features": torch.from_numpy(features),
            "region_masked": region_masked,
        }

    def features(self, rec: VCRRecord, num_boxes: int) -> np.ndarray:  # [1 + N, D]
        if rec.img_fn not in self.shards:
            raise FormatError(
                f"{rec.source}: img_fn {rec.img_fn!r} is not in the feature shards at {self.shards.directory}",
                reason="not in shards",
            )
        region = self.shards[rec.img_fn]
        where = f"{self.shards.directory} (image {rec.img_fn!r}, for {rec.source})"
        if region.num_boxes != num_boxes:
            raise FormatError(
                where, None, "num_boxes", f"{num_boxes} (one row per metadata box)", f"{region.num_boxes}"
            )
        if self.feature_dim is not None and region.feature_dim != self.feature_dim:
            raise FormatError(
                where, None, "features", f"{self.feature_dim}-d (model.visual_feature_dim)", f"{region.feature_dim}-d"
            )
        feats = region.features.astype(np.float32)
        if region.image_box_feature is not None:
            whole = region.image_box_feature.astype(np.float32)
        else:
            whole = feats.mean(axis=0) if len(feats) else np.zeros(feats.shape[1], dtype=np.float32)
        return np.concatenate([whole[None], feats]).astype(np.float32)
