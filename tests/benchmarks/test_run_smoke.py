"""`vlbert-fast bench all --smoke` end to end on a CPU: the suites write rows of the documented schema, a module
that is not there is skipped with its reason, the report and the plots come from the CSVs, and --compare /
--fail-if-regression find a planted regression. It checks the harness, not the speed.

The kernels suite is cut to the geometry script (the embedding script's smoke run has its own test in
test_harness_smoke.py and takes most of a minute under the interpreter) plus a module that does not exist."""

import csv
import re

import pytest
from PIL import Image

from benchmarks import harness, plot, registry

from .runner import main

SUITES = {"kernels": ["bench_geometry", "bench_not_written_yet"], "step": ["bench_step"]}
SUITES["peers"] = ["bench_peers"]


def test_smoke_run_end_to_end(tmp_path, monkeypatch, capsys):
    """One run (tens of seconds of CPU: the interpreter, torch.compile, transformers) and every check of it, in one
    test so that parallel workers do not repeat the run."""
    out = tmp_path / "bench"
    monkeypatch.setattr(registry, "SUITES", SUITES)
    assert main(["bench", "all", "--smoke", "--compile-backend", "eager", "--out", str(out)]) == 0
    check_rows_of_the_schema(out)
    check_step_and_peer_rows(out)
    check_report_sections(out)
    check_plots(out)
    check_compare(out, tmp_path, capsys)


def rows_of(path):
    return harness.read_rows(path)


def check_rows_of_the_schema(out):
    assert sorted(p.name for p in out.glob("*.csv")) == ["geometry.csv", "peers.csv", "step.csv"]
    for path in out.glob("*.csv"):
        with path.open(newline="") as f:
            assert tuple(next(csv.reader(f))) == harness.COLUMNS
        for row in rows_of(path):
            unit, _ = harness.METRICS[row["metric"]]
            assert row["unit"] == unit, row
            assert float(row["p20"]) <= float(row["p50"]) <= float(row["p80"]), row
            assert row["device"].startswith("cpu") and row["git_sha"] and row["timestamp"]


def check_step_and_peer_rows(out):
    step = rows_of(out / "step.csv")
    metrics = {r["metric"] for r in step if r["op"] == "precomputed_smoke"}
    assert metrics == {"time", "samples_per_s", "tokens_per_s", "tflops", "mfu_measured", "padding_share"}
    assert {(r["x_name"], r["x_value"]) for r in step if r["metric"] == "time" and r["op"] != "matmul"} == {
        ("batch", "2"),
        ("batch", "4"),
        ("seq_len", "24"),
    }
    peers = rows_of(out / "peers.csv")
    timed = {r["provider"] for r in peers if r["metric"] == "time" and r["op"] == "precomputed_smoke"}
    assert timed == {"ours", "hf_eager", "hf_sdpa", "reference", "reference_compile"}
    # samples/s is the batch over the step time
    by = {(r["provider"], r["metric"]): r for r in peers}
    assert float(by[("ours", "samples_per_s")]["p50"]) == pytest.approx(
        3 / (float(by[("ours", "time")]["p50"]) * 1e-3), rel=1e-4
    )
    assert float(by[("hf_eager", "padding_share")]["p50"]) > float(by[("ours", "padding_share")]["p50"])


def check_report_sections(out):
    text = (out / "report.md").read_text()
    for heading in ("## Training step", "## Speedup over peers", "## Kernels", "## Not measured", "## Plots"):
        assert heading in text
    assert "bench_not_written_yet: benchmarks/bench_not_written_yet.py is not in this checkout yet" in text
    assert re.search(
        r"\| peers \| precomputed_smoke \| full \| batch=3 \| default \| ours \| hf_eager \| [0-9.]+x \|", text
    )
    assert "no claim of speed" in text


def check_plots(out):
    names = {p.name for p in (out / "plots").glob("*.png")}
    assert {"step_precomputed_smoke_batch.png", "step_precomputed_smoke_seq_len.png", "speedup_peers.png"} <= names
    assert "geometry_box_geometry_embedding_bandwidth.png" in names
    for path in (out / "plots").glob("*.png"):
        with Image.open(path) as image:
            image.load()
            assert image.format == "PNG" and image.size == plot.SIZE
    text = (out / "report.md").read_text()
    assert all(f"(plots/{name})" in text for name in names)


def check_compare(out, tmp_path, capsys):
    args = ["bench", "report", "--out", str(out), "--compare", str(out), "--fail-if-regression", "5"]
    assert main(args) == 0
    assert "measurements compared" in (out / "report.md").read_text()
    # an old result that was twice as fast: this run's times are 100% worse
    old = tmp_path / "old.csv"
    rows = rows_of(out / "peers.csv")
    with old.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=harness.COLUMNS)
        writer.writeheader()
        for row in rows:
            if row["metric"] == "time":
                row = {**row, **{q: str(float(row[q]) / 2) for q in ("p20", "p50", "p80")}}
            writer.writerow(row)
    capsys.readouterr()
    assert main(["bench", "report", "--out", str(out), "--compare", str(old), "--fail-if-regression", "50"]) == 1
    printed = capsys.readouterr().out
    assert "REGRESSION peers/precomputed_smoke hf_eager full batch=3 time: +100.0%" in printed
    assert "REGRESSION" in (out / "report.md").read_text()
    assert main(["bench", "report", "--out", str(out), "--compare", str(old), "--fail-if-regression", "150"]) == 0
