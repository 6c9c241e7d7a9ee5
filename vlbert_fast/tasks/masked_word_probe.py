"""Does the model read the image? Masked-word accuracy on held-out captions with the real images, and with the
images shuffled across the batch (each caption paired with another caption's regions).

With probe words (the synthetic world's colours and shapes), each probe word of a caption is masked on its own
([MASK] in every piece) and predicted; a word the text cannot decide, so accuracy far above the shuffled control
can only come from the image. Without probe words, the training masking (at a fixed seed) chooses the words.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..data import IGNORE_INDEX, Batch, Example, collate
from ..data.caption_dataset import CaptionDataset, Skipped


def probe_examples(ex: Example, probe_ids: set[int], mask_id: int) -> list[Example]:
    """One copy of `ex` per probe word piece, that piece replaced by [MASK] and labelled."""
    out = []
    for pos in range(ex.num_text):
        token = int(ex.input_ids[pos])
        if token in probe_ids:
            ids = ex.input_ids.clone()
            ids[pos] = mask_id
            labels = torch.full_like(ids, IGNORE_INDEX)
            labels[pos] = token
            out.append(dataclasses.replace(ex, input_ids=ids, mlm_labels=labels))
    return out


def with_regions_of(ex: Example, other: Example) -> Example:
    return dataclasses.replace(
        ex,
        boxes=other.boxes,
        image_size=other.image_size,
        region_features=other.region_features,
        region_masked=other.region_masked,
        region_predict=other.region_predict,
        roi_targets=other.roi_targets,
        image=other.image,
    )


@torch.no_grad()
def masked_word_accuracy(
    model: torch.nn.Module,
    dataset: CaptionDataset,
    probe_words: list[str],
    batch_records: int,
    max_batches: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> dict:
    """{'real': acc, 'shuffled': acc, 'words': n} over up to max_batches x batch_records held-out captions."""
    tok = dataset.tokenizer
    probe_ids = set()
    for word in probe_words:
        ids = tok.encode(word).ids
        if len(ids) == 1:  # a word of several pieces would leak through its unmasked pieces
            probe_ids.add(ids[0])
    rng = np.random.default_rng(seed)
    was_training, was_masking = model.training, dataset.masking
    dataset.masking = not probe_ids  # without probe words, the training masking chooses the words
    model.eval()
    correct = {"real": 0, "shuffled": 0}
    total = 0
    order = rng.permutation(len(dataset))[: batch_records * max_batches]
    for start in range(0, len(order), batch_records):
        records = [dataset[int(i)] for i in order[start : start + batch_records]]
        records = [r for r in records if not isinstance(r, Skipped)]
        if len(records) < 2:
            continue
        shift = int(rng.integers(1, len(records)))  # a rotation is a derangement: nobody keeps its own image
        variants = {
            "real": records,
            "shuffled": [with_regions_of(r, records[(i + shift) % len(records)]) for i, r in enumerate(records)],
        }
        for name, exs in variants.items():
            probes = [p for ex in exs for p in probe_examples(ex, probe_ids, tok.mask_id)] if probe_ids else exs
            if not probes:
                continue
            batch: Batch = collate(probes).to(device, dtype=dtype)
            out = model(batch)
            if out.mlm_logits is None or out.mlm_labels.numel() == 0:
                continue
            hits = int((out.mlm_logits.argmax(-1) == out.mlm_labels).sum())
            correct[name] += hits
            if name == "real":
                total += int(out.mlm_labels.numel())
    model.train(was_training)
    dataset.masking = was_masking
    return {
        "real": correct["real"] / max(1, total),
        "shuffled": correct["shuffled"] / max(1, total),
        "words": total,
    }
