"""VCR (Visual Commonsense Reasoning): the real jsonl + metadata readers, object references in the text, polygon
masks, Q->A and QA->R as 4-way choices with the pooled-[CLS] head, the metrics and the leaderboard CSV, and the
synthetic VCR generated from the synthetic world."""

from .formats import VCRMetadata, VCRRecord, read_metadata, read_vcr_jsonl
from .leaderboard import choice_accuracy, merge_leaderboard, q2ar_accuracy, write_task_csv
from .masks import instance_masks, polygon_mask
from .task import VCRTask
from .text import GENDER_NEUTRAL_NAMES, encode_tagged, object_names

__all__ = [
    "GENDER_NEUTRAL_NAMES",
    "VCRMetadata",
    "VCRRecord",
    "VCRTask",
    "choice_accuracy",
    "encode_tagged",
    "instance_masks",
    "merge_leaderboard",
    "object_names",
    "polygon_mask",
    "q2ar_accuracy",
    "read_metadata",
    "read_vcr_jsonl",
    "write_task_csv",
]
