"""The attention and encoder-layer benchmarks run in smoke mode on the CPU (tiny shapes, the Triton providers
interpreted) into a temporary directory: every provider that can run here writes time and TFLOP/s rows of the
harness's schema; one that cannot (flash-attn) is reported and writes nothing. The TFLOP/s formulas are checked
against hand counts."""

import csv
import json

import pytest

from benchmarks import bench_attention, bench_encoder_layer, harness

SMOKE_ARGS = ["--smoke", "--rep-ms", "0"]


def read_rows(path):
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, [dict(zip(header, row, strict=True)) for row in reader]


def check_rates(rows):
    """Each TFLOP/s row mirrors its time row: rate = work / time, quantiles swapped."""
    times = {(r["provider"], r["mode"], r["x_value"]): r for r in rows if r["metric"] == "time"}
    for row in (r for r in rows if r["metric"] == "throughput"):
        assert row["unit"] == "TFLOP/s"
        t = times[(row["provider"], row["mode"], row["x_value"])]
        assert float(row["p20"]) * float(t["p80"]) == pytest.approx(float(row["p80"]) * float(t["p20"]), rel=1e-4)
        assert 0 < float(row["p20"]) <= float(row["p50"]) <= float(row["p80"])
        assert isinstance(json.loads(row["config_json"]), dict) and row["device"].startswith("cpu")


def test_attention_bench_smoke(tmp_path, capsys):
    providers = "triton,flash_attn,sdpa,sdpa_padded,reference,triton_packed,sdpa_packed"
    args = [*SMOKE_ARGS, "--results-dir", str(tmp_path), "--providers", providers, "--dropout", "0.1"]
    assert bench_attention.main(args) == 0
    header, rows = read_rows(tmp_path / "attention.csv")
    assert tuple(header) == harness.COLUMNS
    assert {json.loads(r["config_json"])["dropout"] for r in rows} == {0.1}
    measured = {(r["provider"], r["mode"], r["metric"]) for r in rows}
    for provider in ("triton", "sdpa", "sdpa_padded", "reference", "triton_packed", "sdpa_packed"):
        for mode in harness.MODES:
            assert {(provider, mode, "time"), (provider, mode, "throughput")} <= measured
    assert not any(r["provider"] == "flash_attn" for r in rows)
    assert "flash_attn mean_seqlen=6: skipped (flash-attn is not importable" in capsys.readouterr().out
    check_rates(rows)


def test_encoder_layer_bench_smoke(tmp_path):
    args = [*SMOKE_ARGS, "--results-dir", str(tmp_path), "--providers", "packed,packed_triton,reference"]
    assert bench_encoder_layer.main([*args, "--modes", "forward,full"]) == 0
    header, rows = read_rows(tmp_path / "encoder_layer.csv")
    assert tuple(header) == harness.COLUMNS
    measured = {(r["provider"], r["mode"], r["metric"]) for r in rows}
    for provider in ("packed", "packed_triton", "reference"):
        for mode in ("forward", "full"):
            assert {(provider, mode, "time"), (provider, mode, "throughput")} <= measured
    check_rates(rows)


def test_flop_formulas_on_hand_counts():
    assert bench_attention.forward_flops([3, 5], heads=2, head_dim=4) == 4 * (9 + 25) * 4 * 2
    h, i = 8, 16
    per_token = 2 * 3 * h * h + 2 * h * h + 2 * 2 * h * i
    assert bench_encoder_layer.layer_flops([3, 5], h, i) == 8 * per_token + 4 * (9 + 25) * h
    lengths = bench_attention.varlen_lengths(100, 1000)
    assert sum(lengths) == 1000 and min(lengths[:-1]) >= 50 and max(lengths) <= 150
