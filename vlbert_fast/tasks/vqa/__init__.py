"""VQA v2: the official files, the answer normalisation and accuracy, the task, and its synthetic version."""

from .answers import answer_accuracy, build_answer_vocab, normalize_answer, soft_scores
from .task import VQAHead, VQATask

__all__ = ["VQAHead", "VQATask", "answer_accuracy", "build_answer_vocab", "normalize_answer", "soft_scores"]
