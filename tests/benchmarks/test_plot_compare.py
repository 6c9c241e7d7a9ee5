"""The PNG charts (drawn with Pillow) and the comparison of a run with earlier results."""

import csv

import pytest
from PIL import Image

from benchmarks import compare, harness, plot


def test_line_and_bar_charts_are_pngs_of_the_asked_size(tmp_path):
    series = [plot.Series("ours", [(32, 100.0), (64, 180.0), (256, 420.0)]), plot.Series("peer", [(32, 40.0)])]
    line = plot.line_chart(tmp_path / "a" / "line.png", "t", "batch", "samples/s", series, log2_x=True, size=(640, 400))
    bars = plot.bar_chart(
        tmp_path / "bar.png", "t", "x faster", ["a", "b"], [("hf", [3.0, None]), ("torch", [1.2, 0.8])]
    )
    for path, size in ((line, (640, 400)), (bars, plot.SIZE)):
        with Image.open(path) as image:
            image.load()
            assert image.format == "PNG" and image.size == size
            assert len(image.getcolors(maxcolors=100000)) > 5  # drawn, not a blank canvas
    with Image.open(line) as image:  # the first series' colour is on the canvas
        rgb = tuple(int(plot.PALETTE[0][i : i + 2], 16) for i in (1, 3, 5))
        assert any(colour == rgb for _, colour in image.convert("RGB").getcolors(maxcolors=100000))


def test_charts_refuse_what_they_cannot_draw(tmp_path):
    with pytest.raises(ValueError, match="no series"):
        plot.line_chart(tmp_path / "x.png", "t", "x", "y", [plot.Series("a", [])])
    with pytest.raises(ValueError, match="log2"):
        plot.line_chart(tmp_path / "x.png", "t", "x", "y", [plot.Series("a", [(0, 1.0)])], log2_x=True)
    with pytest.raises(ValueError, match="has 1 values for 2 groups"):
        plot.bar_chart(tmp_path / "x.png", "t", "y", ["a", "b"], [("s", [1.0])])


@pytest.mark.parametrize(
    "lo,hi,ticks",
    [(0, 437, [0, 100, 200, 300, 400, 500]), (0, 0.003, [0.0, 0.001, 0.002, 0.003]), (0, 7, [0, 2, 4, 6, 8])],
)
def test_ticks_are_round_and_cover_the_range(lo, hi, ticks):
    assert plot.nice_ticks(lo, hi) == pytest.approx(ticks)


def row(metric, p50, provider="ours", timestamp="2026-01-01T00:00:00+00:00", device="NVIDIA H100", x="64"):
    unit = harness.METRICS[metric][0]
    return {"bench": "step", "op": "precomputed_base", "provider": provider, "mode": "full", "metric": metric,
            "unit": unit, "x_name": "batch", "x_value": x, "p20": str(p50), "p50": str(p50), "p80": str(p50),
            "config_json": "{}", "device": device, "torch": "2.11", "triton": "3.6", "cuda": "13.0",
            "git_sha": "abc", "timestamp": timestamp}  # fmt: skip


def test_worse_follows_the_metric_and_padding_never_regresses():
    old = [row("time", 10.0), row("samples_per_s", 100.0), row("peak_memory", 4.0), row("padding_share", 20.0)]
    new = [row("time", 11.0), row("samples_per_s", 90.0), row("peak_memory", 3.0), row("padding_share", 40.0)]
    changes = {c.new["metric"]: c for c in compare.compare(new, old)}
    assert changes["time"].worse == pytest.approx(0.1)  # 10% slower
    assert changes["samples_per_s"].worse == pytest.approx(0.1)  # 10% lower rate
    assert changes["peak_memory"].worse == pytest.approx(-0.25)  # less memory is better
    assert changes["padding_share"].worse == 0
    assert {c.new["metric"] for c in compare.regressions(changes.values(), 5)} == {"time", "samples_per_s"}
    assert compare.regressions(changes.values(), 15) == []


def test_the_latest_old_row_counts_and_another_device_is_flagged():
    old = [
        row("time", 5.0, timestamp="2026-01-02T00:00:00+00:00"),
        row("time", 10.0, timestamp="2026-01-01T00:00:00+00:00"),
    ]
    (change,) = compare.compare([row("time", 10.0)], old)
    assert change.change == pytest.approx(1.0) and not change.other_device
    (change,) = compare.compare([row("time", 10.0, device="NVIDIA H200")], old)
    assert change.other_device
    assert "other device: NVIDIA H100" in "\n".join(compare.markdown([change], 5))
    assert compare.compare([row("time", 10.0, x="128")], old) == []  # another point: nothing to compare


def test_compare_loads_a_file_or_a_folder_and_names_what_is_missing(tmp_path):
    path = tmp_path / "step.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=harness.COLUMNS)
        writer.writeheader()
        writer.writerow(row("time", 1.0))
    assert len(compare.load([path])) == len(compare.load([tmp_path])) == 1
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        compare.load([tmp_path / "nope.csv"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no .csv"):
        compare.load([tmp_path / "empty"])
    (tmp_path / "bad.csv").write_text("bench,op\n")
    assert len(compare.load([tmp_path])) == 1  # in a folder, a CSV of other columns is not a result file
    with pytest.raises(ValueError, match="bad.csv: header"):
        compare.load([tmp_path / "bad.csv"])  # named on its own, it is refused
