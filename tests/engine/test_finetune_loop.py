"""The fine-tuning loop on one rank, end to end through the command line, on a small synthetic world from random
weights: the run directory, the log, the metrics, the official prediction file, `vlbert-fast evaluate` reproducing
the loop's val accuracy, resuming, and a missing init_from explained."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlbert_fast.engine.job import PHASES

from ..shared import run_cli

SMALL = [
    "vqa.synth.train_images=64",
    "vqa.synth.val_images=30",
    "vqa.synth.corpus_lines=50",
    "train.global_batch_size=16",
    "train.micro_batch_size=8",
    "train.eval_batch_size=7",
    "train.log_every=2",
    "train.warmup_steps=2",
    "engine.save_interval_steps=4",
]


def _cli(args, cache, timeout=600):
    return run_cli(args, cache, timeout, env={"OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    run_dir = root / "run"
    # 128 training questions / 16 per step = 8 steps per epoch; 6 steps, evaluations at step 4 and at the end
    result = _cli(
        [
            "finetune",
            "--task",
            "vqa",
            "init_from=",
            f"run_dir={run_dir}",
            "train.max_steps=6",
            "train.eval_every_steps=4",
            *SMALL,
        ],
        root / "cache",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, run_dir, result.stdout


def test_run_directory_and_log(run):
    _, run_dir, stdout = run
    assert "init_from is empty: every weight starts from random initialisation" in stdout
    assert "accumulation 2 | 6 steps |" in stdout and "8 steps per epoch" in stdout
    for name in ("config.yaml", "answers.txt", "summary.json", "metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step6"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    eval_rows = [r for r in rows if "val/accuracy" in r]
    assert [r["step"] for r in train_rows] == [2, 4, 6]
    assert all(r["loss/vqa"] == r["loss"] and r["samples_per_s"] > 0 for r in train_rows)
    assert [r["step"] for r in eval_rows] == [4, 6]
    assert all(r["epoch"] == r["step"] / 8 and "accuracy" not in r for r in eval_rows)  # the val/ keys only
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["val_samples"] == 40  # 2 questions x 20 of the 30 held-out images
    assert [e["step"] for e in summary["evals"]] == [4, 6]
    assert summary["val"]["accuracy"] == eval_rows[-1]["val/accuracy"]
    predictions = json.loads(open(summary["predictions"]).read())
    assert len(predictions) == 40 and set(predictions[0]) == {"question_id", "answer"}
    answers = (run_dir / "answers.txt").read_text().split()
    assert all(p["answer"] in answers for p in predictions)
    # the loop's own part of the summary, as for pretraining
    phases = summary["phase_seconds"]
    assert list(phases) == list(PHASES) and summary["checkpoint"] == str(run_dir / "checkpoints" / "step6")
    assert summary["nonfinite_steps"] == 0 and summary["resumed_from"] is None
    assert f"wall time {sum(phases.values()):.0f} s after start-up: distributed" in stdout.split("== summary ==")[1]


def test_evaluate_reproduces_the_loop(run):
    root, run_dir, _ = run
    result = _cli(["evaluate", "--task", "vqa", str(run_dir), "--batch-size", "5"], root / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "eval" / "val" / "metrics_val.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert metrics["samples"] == 40
    assert metrics["accuracy"] == pytest.approx(summary["val"]["accuracy"], abs=1e-9)
    result = _cli(["evaluate", str(run_dir), "--split", "test"], root / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no annotations" in result.stdout
    rows = json.loads(
        (run_dir / "eval" / "test" / "vqa_OpenEnded_mscoco_test-dev2015_vlbert_fast_results.json").read_text()
    )
    assert len(rows) == 20  # 2 questions x the last 10 held-out images
    result = _cli(["evaluate", "--task", "vcr", str(run_dir)], root / "cache")
    assert result.returncode == 2 and "fine-tuned 'vqa', not 'vcr'" in result.stderr


def test_the_readme_example_predicts_as_the_loop_did(run):
    """README, "Using a fine-tuned model": its Python block, run as written on this run, gives the loop's own val
    predictions for the first two questions."""
    root, run_dir, _ = run
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("<!-- the fine-tuned model example:", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert 'load_finetuned("runs/finetune_vqa")' in block
    code = block.replace('"runs/finetune_vqa"', repr(str(run_dir)))
    env = {**os.environ, "VLBERT_FAST_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    (loop_file,) = (run_dir / "predictions").glob("*val*.json")
    by_question = {p["question_id"]: p["answer"] for p in json.loads(loop_file.read_text())}
    assert len(printed) == 2 and all(by_question[p["question_id"]] == p["answer"] for p in printed), printed


def test_resume_continues_the_run(run):
    root, run_dir, _ = run
    result = _cli(
        ["finetune", "init_from=", f"run_dir={run_dir}", "train.max_steps=8", "train.eval_every_steps=4", *SMALL],
        root / "cache",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "resumed from" in result.stdout and "at step 6" in result.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["resumed_from"].endswith("step6")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6, 8]


def test_missing_init_from_is_explained(tmp_path):
    result = _cli(
        ["finetune", f"init_from={tmp_path / 'nothing'}", f"run_dir={tmp_path / 'run'}", *SMALL], tmp_path / "cache"
    )
    assert result.returncode == 2
    assert "no such file or directory" in result.stderr and "vlbert-fast pretrain" in result.stderr


def test_a_training_split_smaller_than_a_global_batch_is_refused(run):
    root, _, _ = run
    result = _cli(
        ["finetune", "init_from=", f"run_dir={root / 'small'}", *SMALL, "train.global_batch_size=256"], root / "cache"
    )
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert "the training split has 128 samples, fewer than one global batch (train.global_batch_size=256)" in (
        result.stderr
    )
