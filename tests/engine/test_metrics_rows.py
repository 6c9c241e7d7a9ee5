"""metrics.jsonl reads as one run after any restart, in strict JSON: rows after the resumed checkpoint and torn lines
are dropped, a fresh start moves an earlier run's file aside, non-finite values are written as null."""

import json
import math

import pytest

from vlbert_fast.engine.metrics import PREVIOUS, MetricsLogger, json_row, truncate_jsonl


def strict(line: str) -> dict:
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(line, parse_constant=refuse)


def test_non_finite_values_are_null_and_listed():
    row = strict(json_row({"step": 3, "loss": math.nan, "grad_norm": math.inf, "lr": 1e-3, "mfu": None}))
    assert row == {
        "step": 3,
        "loss": None,
        "grad_norm": None,
        "lr": 1e-3,
        "mfu": None,
        "nonfinite": ["loss", "grad_norm"],
    }
    assert strict(json_row({"step": 1, "loss": 2.5})) == {"step": 1, "loss": 2.5}


def test_resume_drops_later_rows_and_torn_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [json.dumps({"step": s, "loss": 1.0}) for s in (1, 2, 3, 4)]
    path.write_text("\n".join(rows) + '\n{"step": 5, "lo')  # killed in the middle of a write
    truncate_jsonl(path, after_step=2)
    assert [strict(line)["step"] for line in path.read_text().splitlines()] == [1, 2]


@pytest.mark.parametrize("resume_step", [None, 2])
def test_a_restart_never_duplicates_steps(tmp_path, resume_step):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3)))
    logger = MetricsLogger(tmp_path, enabled=True, max_steps=4, resume_step=resume_step)
    first = 1 if resume_step is None else resume_step + 1
    for step in range(first, 5):
        logger.write_row({"step": step, "loss": math.nan if step == 4 else 0.5})
    logger.close()
    steps = [strict(line)["step"] for line in path.read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # each step once
    if resume_step is None:  # a fresh start: the earlier run's rows are kept beside, not mixed in
        assert [strict(line)["step"] for line in (tmp_path / PREVIOUS).read_text().splitlines()] == [1, 2, 3]
        assert f"moved to {tmp_path / PREVIOUS}" in logger.note
    else:
        assert not (tmp_path / PREVIOUS).exists() and logger.note is None
