"""Log lines a person can follow: every line starts with the time, a step line carries the ETA at the last window's
pace and the FLOP rate in a unit that suits it (a CPU's GFLOP/s, not "0.000945 TFLOP/s"), evaluations get rows of
their own in metrics.jsonl, and each start-up phase is announced by the launch's first rank only."""

import json
import re

import pytest

from vlbert_fast.engine.metrics import (
    MetricsLogger,
    format_duration,
    format_line,
    format_rate,
    startup_line,
)

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "


@pytest.mark.parametrize(
    ("per_second", "text"),
    [
        (0.000945e12, "945 MFLOP/s"),
        (1.7e9, "1.7 GFLOP/s"),
        (12.34e9, "12.3 GFLOP/s"),
        (312.4e12, "312 TFLOP/s"),
        (2.5e15, "2.5 PFLOP/s"),
        (999.0, "999 FLOP/s"),
        (0.0, "0 FLOP/s"),
    ],
)
def test_flop_rates_read_in_a_sensible_unit(per_second, text):
    assert format_rate(per_second) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4, "0s"), (42, "42s"), (185, "3m05s"), (3600 * 2 + 7 * 60 + 10, "2h07m"), (86400 * 3 + 4 * 3600, "3d04h")],
)
def test_durations(seconds, text):
    assert format_duration(seconds) == text


def metrics(**extra) -> dict:
    base = {
        "loss": 4.5, "losses": {"mlm": 1.5, "roi": 3.0}, "lr": 1e-3, "grad_norm": 2.0, "samples_per_s": 800.0,
        "tokens_per_s": 15000.0, "tflops": 0.000945, "mfu": None, "data_wait_share": 0.02, "memory_gb": 0.5,
        "loss_scale": None, "nonfinite_steps": 0,
    }  # fmt: skip
    return {**base, **extra}


def test_step_line_has_eta_and_rate(tmp_path, capsys):
    logger = MetricsLogger(tmp_path, enabled=True, max_steps=1000)
    logger.log(200, metrics(step_seconds=0.5))
    logger.close()
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(STAMP + r"step 200/1000 \| ETA 6m40s \| loss 4\.5000 .*", line), line  # 800 steps x 0.5 s
    assert "| 945 MFLOP/s |" in line and "TFLOP/s" not in line
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert row["eta_s"] == pytest.approx(400.0) and row["tflops"] == 0.000945  # the row keeps TFLOP/s as a number
    assert format_line(5, 10, metrics()).startswith("step 5/10 | loss ")  # no pace known: no ETA


def test_eval_rows_and_stamped_prints(tmp_path, capsys):
    logger = MetricsLogger(tmp_path, enabled=True, max_steps=10)
    logger.log_eval(5, {"real": 0.5, "shuffled": 0.2, "words": 30})
    logger.print("step 5: checkpoint x")
    logger.print("== summary ==\ntrained", stamp=False)
    logger.close()
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert row["step"] == 5 and (row["val/real"], row["val/shuffled"], row["val/words"]) == (0.5, 0.2, 30)
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(STAMP + "step 5: checkpoint x", out[0]) and out[1:] == ["== summary ==", "trained"]


def test_startup_lines_come_from_the_first_rank_only(monkeypatch, capsys):
    monkeypatch.delenv("RANK", raising=False)
    startup_line("start-up: data")
    monkeypatch.setenv("RANK", "1")
    startup_line("start-up: not shown")
    monkeypatch.setenv("RANK", "0")
    startup_line("start-up: model")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and re.fullmatch(STAMP + "start-up: data", out[0]) and out[1].endswith("start-up: model")
