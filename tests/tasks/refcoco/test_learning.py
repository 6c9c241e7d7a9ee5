"""The learning test: synthetic RefCOCO+ (ground-truth boxes), fine-tuned with `vlbert-fast finetune --task refcoco`
(the task's embedded default: 3 epochs, 330 steps of 32 expressions) from the embedded default's pretraining run,
picks the referred object far more often than chance.

Chance: a uniform pick among a sample's RoIs (the whole image and the 2-4 objects) is right 1 / R of the time; the
whole image is never the target, so a guess among the objects only is right 1 / (R - 1); both are computed from the
val samples. Measured on 2 (heavily shared) cores, seed 0, from the embedded default's checkpoint: val accuracy
77.8% against chances of 24.2% (1 / R) and 32.4% (1 / (R - 1)) (60.7% before the pretraining's text-only rows took
the original's form); the assertion takes about half the earlier margin over the
objects-only chance. (The loss sits near the prior's for ~200 steps, then falls: the expression kinds that name a
shape are learnt first.)
"""

import json
import os
from unittest import mock

import numpy as np
import pytest

from vlbert_fast.config import load_config
from vlbert_fast.config.finetune_run import FinetuneConfig
from vlbert_fast.tasks.refcoco import RefCOCOTask

from ...shared import output_tail, run_cli

OVERRIDES = ["train.log_every=20"]  # otherwise the task's embedded default (RefCOCOTask.EMBEDDED_DEFAULT)


@pytest.mark.slow
def test_finetuned_refcoco_beats_chance(pretrained_default, synth_cache, tmp_path):
    run_dir = tmp_path / "refcoco"
    args = ["finetune", "--task", "refcoco", f"init_from={pretrained_default}", f"run_dir={run_dir}", *OVERRIDES]
    # synth_cache: the world the model was pretrained on; the timeout is a safety net (over 900 s seen under load)
    result = run_cli(args, synth_cache, timeout=2400)
    assert result.returncode == 0, output_tail(result)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["init_from"] == str(pretrained_default)
    with mock.patch.dict(os.environ, {"VLBERT_FAST_CACHE": str(synth_cache)}):
        task = RefCOCOTask(load_config(FinetuneConfig, [run_dir / "config.yaml"]))
    rois = np.array([len(sample.target["labels"]) for sample in task.datasets("val")])
    chance_all, chance_objects = float(np.mean(1 / rois)), float(np.mean(1 / (rois - 1)))
    accuracy = summary["val"]["accuracy"]
    print(f"refcoco val accuracy {accuracy:.3f} (chance {chance_all:.3f}, among the objects {chance_objects:.3f})")
    assert summary["val_samples"] == len(rois) > 200
    assert summary["final_loss"] < summary["first_loss"]
    assert accuracy > chance_objects + 0.14
    predictions = json.loads((run_dir / "predictions" / "refcoco+_val.json").read_text())
    assert len(predictions) == len(rois) and {"ref_id", "sent_id", "box"} <= predictions[0].keys()
