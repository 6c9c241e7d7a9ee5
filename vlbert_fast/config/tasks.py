"""Options of each fine-tuning task (tasks/<name>/). One dataclass per task; `FinetuneConfig.task` names the task
whose options apply. An empty `root` means the task's synthetic version, generated from the synthetic world in
the exact official format and read by the same readers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class VQAOptions:
    root: str = ""
    """Directory with the official VQA v2 question and annotation JSON files (and the region features); empty: the
    synthetic VQA generated from the synthetic world."""


@dataclass
class RefCOCOOptions:
    root: str = ""
    """Directory with refcoco+/refs(unc).p and instances.json (and the region features); empty: the synthetic
    RefCOCO+ generated from the synthetic world."""


@dataclass
class VCROptions:
    root: str = ""
    """Directory with the VCR jsonl files and the per-image metadata JSON (and the region features); empty: the
    synthetic VCR generated from the synthetic world."""
