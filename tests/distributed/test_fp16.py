"""fp16 with DeepSpeed's dynamic loss scale (ZeRO-1, one process): a start at 2**20 overflows fp16 gradients, each
overflow skips its update and halves the scale, and every event is logged and counted in metrics.jsonl."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from vlbert_fast.model.consolidate import consolidated_state_dict

from .helpers import pretrain_args, run_command

pytestmark = pytest.mark.slow  # a 1-process launch, about 5-15 s on 2 cores

WORKER = Path(__file__).with_name("worker_fp16.py")


def test_dynamic_loss_scale_events_are_logged(tiny_config, ds_env, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [
        "train.precision=fp16",
        "engine.zero_stage=1",
        "engine.fp16_initial_scale_power=20",
        "engine.fp16_hysteresis=1",
        "train.max_steps=6",
    ]
    result = run_command([sys.executable, str(WORKER), *pretrain_args(tiny_config, run_dir, *overrides)], ds_env)
    assert result.returncode == 0, result.tail()
    events = [line for line in result.output.splitlines() if "fp16 gradient overflow, update skipped" in line]
    assert events and events[0] == "step 1: fp16 gradient overflow, update skipped; loss scale 1.04858e+06 -> 524288"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    scales = [r["loss_scale"] for r in rows]
    assert scales[0] == 2.0**19 and all(b <= a for a, b in zip(scales, scales[1:], strict=False))
    assert rows[-1]["overflow_steps"] == len(events) == round(math.log2(2.0**20 / scales[-1]))
    weights = consolidated_state_dict(run_dir / "checkpoints" / "step6")
    assert all(torch.isfinite(t).all() for t in weights.values())
