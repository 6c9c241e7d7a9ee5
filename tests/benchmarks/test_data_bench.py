"""`vlbert-fast bench data` on a CPU at tiny sizes: rows of the harness schema for both datasets and every format,
the padded format costing at least twice the bytes per sample of the ragged one on the BUTD-like box counts (a
property of the formats, not a timing), the summary, and the scale simulation's open-time and memory rows."""

import json

import pytest

from benchmarks import bench_data, bench_data_scale, harness, registry

from .runner import main


def test_the_data_suite_is_registered_and_runs_on_a_cpu(monkeypatch, tmp_path, capsys):
    assert registry.SUITES["data"] == ["bench_data", "bench_data_scale"] and "data" in registry.CPU_SUITES
    calls = []
    for module in (bench_data, bench_data_scale):
        monkeypatch.setattr(module, "main", lambda argv, name=module.__name__: calls.append((name, argv)) or 0)
    monkeypatch.setattr(harness, "RESULTS_DIR", tmp_path / "results")
    assert main(["bench", "data"]) == 0  # no --smoke needed on a CPU, and the rows go to benchmarks/results
    assert [name for name, _ in calls] == ["benchmarks.bench_data", "benchmarks.bench_data_scale"]
    argv = calls[0][1]
    assert argv[argv.index("--results-dir") + 1] == str(tmp_path / "results") and "--smoke" not in argv


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VLBERT_FAST_CACHE", str(tmp_path / "cache"))


def test_bytes_per_sample_and_loader_rows(tmp_path, cache):
    out = tmp_path / "results"
    argv = ["--smoke", "--results-dir", str(out), "--workers", "0,1", "--seconds", "0.1", "--images", "16"]
    assert bench_data.main(argv) == 0
    rows = harness.read_rows(out / "data.csv")
    storage = {(r["op"], r["provider"]): float(r["p50"]) for r in rows if r["metric"] == "bytes_per_sample"}
    formats = {"ragged", "ragged_top10", "padded"}
    assert set(storage) == {(d, f) for d in ("synthetic", "butd_like") for f in formats}
    assert storage[("butd_like", "padded")] >= 2 * storage[("butd_like", "ragged")]
    assert storage[("butd_like", "ragged_top10")] < storage[("butd_like", "ragged")]
    for metric in ("samples_per_s", "samples_per_cpu_s"):
        loader = {
            (r["op"], r["provider"], r["x_value"]) for r in rows if r["mode"] == "loader" and r["metric"] == metric
        }
        assert loader == {(d, f, w) for d in ("synthetic", "butd_like") for f in formats for w in ("0", "1")}
        assert all(float(r["p50"]) > 0 for r in rows if r["metric"] == metric)
    for row in rows:
        assert row["unit"] == harness.METRICS[row["metric"]][0] and float(row["p20"]) <= float(row["p80"])
    summary = (out / "data.md").read_text()
    assert "| butd_like | padded |" in summary and "loader, 1 workers: samples/s (per CPU-s)" in summary


def test_scale_simulation_rows(tmp_path):
    out = tmp_path / "results"
    argv = ["--smoke", "--results-dir", str(out), "--records", "3000", "--reads", "20", "--ranks", "2"]
    assert bench_data_scale.main([*argv, "--workers-per-rank", "2", "--padded-workers", "1"]) == 0
    rows = harness.read_rows(out / "data_scale.csv")
    measured = {
        ("open_time", "open"),
        ("open_time", "first_lookup"),
        ("rss_growth", "open"),
        ("rss_growth", "open+reads"),
    }
    assert {(r["metric"], r["mode"]) for r in rows if r["provider"] == "ragged"} == {
        *measured,
        ("open_time", "first_open"),
    }
    assert {(r["metric"], r["mode"]) for r in rows if r["provider"] == "padded_v1"} == measured
    assert all(r["x_value"] == "3000" and float(r["p50"]) >= 0 for r in rows if r["metric"] == "open_time")
    workers = {
        r["provider"]: json.loads(r["config_json"]).get("workers_measured")
        for r in rows
        if r["mode"] == "open" and r["metric"] == "open_time"
    }
    assert workers == {"ragged": 4, "padded_v1": 1}
