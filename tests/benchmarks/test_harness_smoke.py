"""The benchmark harness and scripts: the scripts run in smoke mode (tiny shapes, the Triton provider interpreted,
torch.compile with its tracing-only "eager" backend, which takes a second where inductor takes ~25 s on 2 cores)
into a temporary directory, and every row has the documented schema. CPU timings go nowhere else."""

import csv
import json

import pytest
import torch

from benchmarks import bench_embedding, bench_geometry, harness

SMOKE_ARGS = ["--smoke", "--compile-backend", "eager", "--rep-ms", "0"]


def read_rows(path):
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, [dict(zip(header, row, strict=True)) for row in reader]


def check_schema(rows):
    for row in rows:
        assert row["metric"] in ("time", "bandwidth")
        assert row["unit"] == {"time": "ms", "bandwidth": "GB/s"}[row["metric"]]
        p20, p50, p80 = (float(row[q]) for q in ("p20", "p50", "p80"))
        assert 0 < p20 <= p50 <= p80, row
        assert isinstance(json.loads(row["config_json"]), dict)
        assert row["device"].startswith("cpu") and row["torch"] == torch.__version__ and row["cuda"] == "none"
        assert row["git_sha"] and row["timestamp"] and row["triton"]
        int(row["x_value"])


def test_embedding_bench_smoke(tmp_path):
    args = [*SMOKE_ARGS, "--results-dir", str(tmp_path), "--providers", "triton,torch,torch_compile"]
    assert bench_embedding.main(args) == 0
    header, rows = read_rows(tmp_path / "embedding.csv")
    assert tuple(header) == harness.COLUMNS
    check_schema(rows)
    measured = {(r["op"], r["provider"], r["mode"], r["metric"]) for r in rows}
    for provider in ("triton", "torch", "torch_compile"):
        for mode in harness.MODES:
            for metric in ("time", "bandwidth"):
                assert ("fused_embedding", provider, mode, metric) in measured
    assert ("copy", "torch", "forward", "bandwidth") in measured
    assert {r["bench"] for r in rows} == {"embedding"} and {r["x_name"] for r in rows} == {"tokens"}


def test_geometry_bench_smoke(tmp_path):
    assert bench_geometry.main([*SMOKE_ARGS, "--results-dir", str(tmp_path), "--modes", "forward,backward"]) == 0
    header, rows = read_rows(tmp_path / "geometry.csv")
    assert tuple(header) == harness.COLUMNS
    check_schema(rows)
    measured = {(r["op"], r["provider"], r["mode"]) for r in rows}
    for provider in bench_geometry.PROVIDERS:
        assert {("box_geometry_embedding", provider, "forward"), ("box_geometry_embedding", provider, "backward")} <= (
            measured
        )
        assert ("visual_input", provider, "forward") in measured
    assert not any(r["mode"] == "full" for r in rows)


def test_rows_append_and_a_foreign_header_is_refused(tmp_path):
    writer = harness.ResultWriter(tmp_path, "x", torch.device("cpu"))
    writer.write("op", "p", "forward", "time", "ms", "n", 1, (1.0, 2.0, 3.0), {"a": 1})
    harness.ResultWriter(tmp_path, "x", torch.device("cpu")).write(
        "op", "p", "forward", "time", "ms", "n", 2, (1.0, 2.0, 3.0), {}
    )
    header, rows = read_rows(tmp_path / "x.csv")
    assert [r["x_value"] for r in rows] == ["1", "2"]
    (tmp_path / "y.csv").write_text("bench,op\n")
    with pytest.raises(ValueError, match="y.csv: header"):
        harness.ResultWriter(tmp_path, "y", torch.device("cpu"))


def test_cpu_results_never_default_to_the_committed_folder():
    args = harness.parser("x", ["a"]).parse_args(["--device", "cpu"])
    _, _, _, results = harness.resolve(args, ["a"])
    assert results != harness.RESULTS_DIR
    with pytest.raises(SystemExit, match="unknown"):
        harness.resolve(harness.parser("x", ["a"]).parse_args(["--providers", "b"]), ["a"])


def test_bandwidth_rows_mirror_the_time_quantiles(tmp_path):
    writer = harness.ResultWriter(tmp_path, "z", torch.device("cpu"))
    work = harness.Workload(lambda: torch.zeros(4), [], {"forward": 10**9})
    timings = harness.run_workload(writer, "op", "p", lambda: work, "n", 1, {}, ["forward"], torch.device("cpu"), 0)
    _, rows = read_rows(tmp_path / "z.csv")
    time_row, rate_row = rows
    t = timings["forward"]
    assert float(rate_row["p20"]) == pytest.approx(1.0 / (t.p80 * 1e-3), rel=1e-5)  # 1 GB over the slow time
    assert float(rate_row["p80"]) == pytest.approx(1.0 / (t.p20 * 1e-3), rel=1e-5)
    assert float(time_row["p50"]) == pytest.approx(t.p50, rel=1e-5)


def test_an_unavailable_provider_is_reported_and_writes_nothing(tmp_path, capsys):
    writer = harness.ResultWriter(tmp_path, "u", torch.device("cpu"))

    def make():
        raise harness.Unavailable("no GPU here")

    assert harness.run_workload(writer, "op", "p", make, "n", 1, {}, ["forward"], torch.device("cpu")) == {}
    assert "skipped (no GPU here)" in capsys.readouterr().out
    assert writer.rows_written == 0


def test_embedding_bytes_formula_on_a_hand_counted_stream():
    stream = bench_embedding.packed_stream(40, vocab=11)
    kinds = stream["token_kind"].tolist()
    k = stream["region_masked"].shape[0]
    words = sum(kind in (0, 1, 4) for kind in kinds)
    h, e = 8, 2
    got = bench_embedding.bytes_moved(stream, h, vocab=11, element=e)
    reads = 5 * 40 * 8 + k + (words + 512 + 3 + 10 + k) * h * e
    assert got["forward"] == reads + 40 * h * e
    assert got["backward"] == 40 * h * e + reads + (11 + 512 + 3 + 10 + k) * h * e
    assert got["full"] == got["forward"] + got["backward"]


def test_rotated_workloads_cycle_through_their_input_sets(monkeypatch, tmp_path):
    calls = []

    def make(i):
        x = torch.full((3,), float(i), requires_grad=True)
        return harness.Workload(lambda: (calls.append(i), x * 2)[1], [x], {"forward": 24}, {"forward": 6.0})

    monkeypatch.setattr(harness, "l2_bytes", lambda device: 50 * 2**20)  # as if on a GPU with 50 MB of L2
    assert harness.rotation_count(10 * 2**20, torch.device("cpu")) == 10
    assert harness.rotation_count(200 * 2**20, torch.device("cpu")) == 1
    work = harness.rotated(make, 30 * 2**20, torch.device("cpu"))
    assert len(work.variants) == 4 and len(work.grad_inputs) == 4
    writer = harness.ResultWriter(tmp_path, "r", torch.device("cpu"))
    harness.run_workload(writer, "op", "p", lambda: work, "n", 1, {}, harness.MODES, torch.device("cpu"), 0)
    assert set(calls) == {0, 1, 2, 3}
    rows = read_rows(tmp_path / "r.csv")[1]
    assert {(r["mode"], r["metric"]) for r in rows} >= {("forward", "tflops"), ("forward", "bandwidth")}
    assert {r["mode"] for r in rows} == set(harness.MODES)


def test_iterations_timer_and_the_time_budget():
    seen = []
    t = harness.time_iterations(seen.append, torch.device("cpu"), warmup=2, iters=5)
    assert seen == list(range(7)) and 0 <= t.p20 <= t.p50 <= t.p80
    assert harness.peak_memory_gib(lambda: None, torch.device("cpu")) is None
    harness.set_time_budget(0)
    try:
        assert harness.budget_spent()
    finally:
        harness.set_time_budget(None)
    assert not harness.budget_spent()


def test_roi_align_bench_smoke(tmp_path):
    from benchmarks import bench_roi_align

    assert bench_roi_align.main([*SMOKE_ARGS, "--results-dir", str(tmp_path), "--providers", "native,torch"]) == 0
    header, rows = read_rows(tmp_path / "roi_align.csv")
    assert tuple(header) == harness.COLUMNS
    check_schema(rows)
    measured = {(r["op"], r["provider"], r["mode"]) for r in rows}
    for provider in ("native", "torch"):  # the interpreted Triton provider is minutes on CPU (tests/ops cover it)
        assert {("roi_align", provider, mode) for mode in harness.MODES} <= measured
    assert ("copy", "torch", "forward") in measured and {r["x_name"] for r in rows} == {"rois"}


def test_e2e_step_bench_smoke(tmp_path):
    from benchmarks import bench_e2e_step

    args = [*SMOKE_ARGS, "--results-dir", str(tmp_path), "--providers", "ours", "--modes", "forward,full"]
    assert bench_e2e_step.main(args) == 0
    header, rows = read_rows(tmp_path / "e2e_step.csv")
    assert tuple(header) == harness.COLUMNS
    check_schema(rows)
    measured = {(r["op"], r["mode"]) for r in rows if r["metric"] == "time"}
    assert measured == {(op, mode) for op in bench_e2e_step.OPS for mode in ("forward", "full")}
