"""Fine-tuning tasks: VQA v2, RefCOCO+ and VCR. The contract every task follows is in base.py.

The registry maps a task name to its class as "module:Class", imported on first use. A task class is built as
`Class(cfg: FinetuneConfig, run_dir: Path)` (run_dir: where the run keeps files the task derives, such as VQA's
answer vocabulary) and may carry `EMBEDDED_DEFAULT`, a mapping of FinetuneConfig overrides applied before any YAML
file: its embedded default for `vlbert-fast finetune --task <name>` with no config.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from .base import Task, TaskBatch, TaskSample, collate_task

TASKS: dict[str, str] = {
    "vqa": "vlbert_fast.tasks.vqa:VQATask",
    "vcr": "vlbert_fast.tasks.vcr:VCRTask",
    # refcoco and vcr: one line each below.
    "refcoco": "vlbert_fast.tasks.refcoco:RefCOCOTask",
}


def task_class(name: str) -> type:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; registered: {sorted(TASKS)}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_task(cfg, run_dir: str | Path) -> Task:
    """The task `cfg.task` (a FinetuneConfig) with its options; `run_dir` as in the module docstring."""
    return task_class(cfg.task)(cfg, Path(run_dir))


def task_defaults(name: str) -> dict:
    """The embedded-default overrides of task `name` ({} when it has none)."""
    return dict(getattr(task_class(name), "EMBEDDED_DEFAULT", {}))


__all__ = ["TASKS", "Task", "TaskBatch", "TaskSample", "build_task", "collate_task", "task_class", "task_defaults"]
