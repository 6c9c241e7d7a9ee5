"""Fine-tuning tasks: VQA v2, RefCOCO+ and VCR. The contract every task follows is in base.py."""

from .base import Task, TaskBatch, TaskSample, collate_task

__all__ = ["Task", "TaskBatch", "TaskSample", "collate_task"]
