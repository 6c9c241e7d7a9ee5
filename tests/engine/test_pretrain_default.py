"""The learning test: the embedded default (`vlbert-fast pretrain`, no arguments) trained for its default steps
reads the image — masked colour/shape words are far more often right with the real images than with the images
shuffled across the batch — its loss falls, and the run directory holds what users expect.

Measured on an idle 2-core machine (seed 0, 1000 steps): 59.7% with the real images, 20.7% shuffled (a 39-point
margin; chance is 1/6 for colours and 1/4 for shapes), loss 16.4 -> 4.6, 82 s of training (87 s wall, start-up
and three evaluations included). The assertions take about half the margin.
"""

import json
import re

import pytest
import yaml

from vlbert_fast.config import RunConfig, load_config
from vlbert_fast.engine.job import PHASES


@pytest.fixture(scope="module")
def default_run(pretrained_default):
    """The session's embedded-default run (tests/conftest.py), shared with the fine-tuning learning tests."""
    return pretrained_default, (pretrained_default.parent / "pretrain.log").read_text()


def test_the_model_reads_the_image(default_run):
    run_dir, stdout = default_run
    summary = json.loads((run_dir / "summary.json").read_text())
    acc = summary["masked_word_accuracy"]
    assert acc["words"] > 500
    assert acc["shuffled"] < 0.3  # near chance: the text alone cannot tell the colour or shape
    assert acc["real"] - acc["shuffled"] > 0.2, acc
    assert acc["real"] > 1.8 * acc["shuffled"], acc
    assert "with the real images" in stdout and "shuffled across the batch" in stdout


def test_loss_falls(default_run):
    run_dir, _ = default_run
    summary = json.loads((run_dir / "summary.json").read_text())
    first, last = summary["first_losses"], summary["final_losses"]
    assert last["loss"] < 0.4 * first["loss"]
    assert last["mlm_image"] < last["mlm_text"]  # captions are easier with the image than the corpus without
    assert summary["steps"] == RunConfig().train.max_steps


def test_run_directory(default_run):
    run_dir, _ = default_run
    cfg = load_config(RunConfig, [run_dir / "config.yaml"])
    assert cfg.run_dir == str(run_dir) and cfg.model == RunConfig().model
    all_rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in all_rows if "loss" in r]  # the training rows; the evaluations' rows carry val/ keys
    assert [r["step"] for r in rows] == list(range(20, cfg.train.max_steps + 1, 20))
    evals = [r for r in all_rows if "val/real" in r]
    every = cfg.train.eval_every_steps
    assert [r["step"] for r in evals] == list(range(every, cfg.train.max_steps, every)) + [cfg.train.max_steps]
    assert all(r["val/words"] > 500 and 0 <= r["val/shuffled"] <= 1 for r in evals)
    assert len(rows) + len(evals) == len(all_rows)
    for key in (
        "loss",
        "loss/mlm_image",
        "loss/mlm_text",
        "loss/roi",
        "lr",
        "grad_norm",
        "samples_per_s",
        "tokens_per_s",
        "tflops",
        "data_wait_share",
        "memory_gb",
    ):
        assert all(r[key] is not None for r in rows), key
    assert rows[-1]["lr"] == 0.0 and max(r["lr"] for r in rows) <= cfg.train.lr
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    checkpoints = run_dir / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == f"step{cfg.train.max_steps}"
    assert (checkpoints / f"step{cfg.train.max_steps}" / "mp_rank_00_model_states.pt").is_file()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["root"] == ""


def test_the_summary_says_where_the_time_went(default_run):
    run_dir, stdout = default_run
    phases = json.loads((run_dir / "summary.json").read_text())["phase_seconds"]
    assert list(phases) == list(PHASES) and all(seconds >= 0 for seconds in phases.values())
    assert phases["steps"] == max(phases.values())  # the other phases are seconds of set-up and evaluation
    assert f"wall time {sum(phases.values()):.0f} s after start-up: distributed" in stdout


def test_the_log_says_what_it_is_doing_and_when(default_run):
    """Start-up phases announced as they begin, every line stamped, an ETA on step lines, evaluations during the run,
    FLOP rates of a CPU in GFLOP/s or MFLOP/s."""
    _, stdout = default_run
    lines = stdout.splitlines()
    starts = [m.group(1) for line in lines if (m := re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d start-up: (\w+)", line))]
    assert starts == ["process", "data", "model"]
    steps = [line for line in lines if re.search(r" step \d+/1000 \| ETA ", line)]
    assert len(steps) == 50 and all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d step ", line) for line in steps)
    assert all(re.search(r"\| [0-9.]+ [MG]FLOP/s \|", line) for line in steps), steps[-1]
    evals = [line.split(" eval step ")[1].split(" ")[0] for line in lines if " eval step " in line]
    assert evals == ["250", "500", "750"]
