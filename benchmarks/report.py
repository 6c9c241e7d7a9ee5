"""The markdown report and the PNG plots of a run, generated from its CSV rows (benchmarks/run.py calls `write`;
`python -m benchmarks.run report --out DIR` rebuilds them from the CSVs in DIR).

report.md holds: where it ran (device, versions, git sha, from the rows), the training-step table (samples/s,
tokens/s, TFLOP/s, MFU against the stated and the measured peak, peak memory, padding share), our speedup over
every peer at every point, the kernel tables (median time per mode, bandwidth), the comparison with earlier
results when asked, and the plots: throughput against batch / sequence length / size per provider, and speedup
over each peer. Speedup = the peer's median time / ours, ours being the fastest of our providers at that point
(registry.is_ours).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from . import compare as comparing
from .plot import Series, bar_chart, line_chart
from .registry import is_ours

STEP_COLUMNS = (
    ("time", "ms/step", ".2f"), ("samples_per_s", "samples/s", ".1f"), ("tokens_per_s", "tokens/s", ".0f"),
    ("tflops", "TFLOP/s", ".3g"), ("mfu", "MFU %", ".3g"), ("mfu_measured", "MFU % (measured peak)", ".3g"),
    ("peak_memory", "peak GiB", ".2f"), ("padding_share", "padding %", ".0f"),
)  # fmt: skip
MODE_ORDER = ("forward", "backward", "full")
STEP_NOTE = (
    "One step = forward, backward and the optimizer step. TFLOP/s and MFU credit every provider with the same useful "
    "work: the batch's analytic training FLOPs (model/flops.py: matrix products on real tokens, heads on their "
    "targets). MFU % is against the stated peak (data sheet), the measured one against a large matrix product. "
    "Padding %: slots of the provider's padded layout that hold no token, the work that packing avoids."
)


def step_benches(rows) -> set[str]:
    """Benches that measure whole training steps (they write samples/s)."""
    return {r["bench"] for r in rows if r["metric"] == "samples_per_s"}


def _x(row) -> float:
    try:
        return float(row["x_value"])
    except ValueError:
        return float("nan")


def _block(row) -> str:
    return json.loads(row["config_json"]).get("block_config", "")


def speedups(rows) -> list[dict]:
    """Per point (bench, op, mode, x, launch config): the fastest of ours against each peer, by median time."""
    points: dict[tuple, dict[str, float]] = defaultdict(dict)
    for r in rows:
        if r["metric"] == "time" and r["op"] not in ("copy", "matmul"):
            key = (r["bench"], r["op"], r["mode"], r["x_name"], r["x_value"], _block(r))
            points[key][r["provider"]] = float(r["p50"])
    out = []
    for (bench, op, mode, x_name, x_value, block), times in points.items():
        ours = {p: t for p, t in times.items() if is_ours(p)}
        if not ours:
            continue
        best = min(ours, key=ours.get)
        for peer, t in times.items():
            if not is_ours(peer):
                out.append(dict(bench=bench, op=op, mode=mode, x_name=x_name, x_value=x_value, block=block,
                                ours=best, peer=peer, speedup=t / ours[best]))  # fmt: skip
    return out


def _environment(rows) -> list[str]:
    lines = [
        f"- {c}: {', '.join(sorted({r[c] for r in rows}))}" for c in ("device", "torch", "triton", "cuda", "git_sha")
    ]
    stamps = sorted(r["timestamp"] for r in rows)
    lines.append(f"- measured: {stamps[0]} to {stamps[-1]}")
    if all(r["cuda"] == "none" or r["device"].startswith("cpu") for r in rows):
        lines += ["", "**CPU run: these numbers check the harness; they are no claim of speed.**"]
    return lines


def _config_line(rows) -> str:
    configs = [json.loads(r["config_json"]) for r in rows]
    shared = {k: v for k, v in configs[0].items() if all(c.get(k) == v for c in configs)}
    return ", ".join(f"{k}={v}" for k, v in sorted(shared.items()))


def _table(head: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in body)]


def _step_section(rows) -> list[str]:
    lines = []
    for bench in sorted(step_benches(rows)):
        chosen = [r for r in rows if r["bench"] == bench]
        lines += [f"### {bench}", ""]
        for r in chosen:
            if r["op"] == "matmul":
                dtype = json.loads(r["config_json"]).get("dtype")
                lines += [f"Measured matrix peak: {float(r['p50']):.1f} TFLOP/s ({r['x_value']}^3 {dtype}).", ""]
        cells: dict[tuple, dict[str, str]] = defaultdict(dict)
        for r in chosen:
            if r["op"] != "matmul":
                cells[(r["op"], r["x_name"], _x(r), r["x_value"], r["provider"])][r["metric"]] = r["p50"]
        body = [
            [op, provider, f"{x_name}={x_value}"]
            + [format(float(got[m]), fmt) if m in got else "-" for m, _, fmt in STEP_COLUMNS]
            for (op, x_name, _, x_value, provider), got in sorted(cells.items())
        ]
        lines += _table(["op", "provider", "x", *(label for _, label, _ in STEP_COLUMNS)], body)
        lines += ["", f"Config: {_config_line([r for r in chosen if r['op'] != 'matmul'])}", ""]
    return lines


def _kernel_section(rows) -> list[str]:
    lines = []
    steps = step_benches(rows)
    for bench in sorted({r["bench"] for r in rows} - steps):
        chosen = [r for r in rows if r["bench"] == bench and r["metric"] in ("time", "bandwidth", "tflops")]
        cells: dict[tuple, dict[str, str]] = defaultdict(dict)
        for r in chosen:
            cells[(r["op"], _block(r), _x(r), r["x_name"], r["x_value"], r["provider"])][(r["mode"], r["unit"])] = (
                f"{float(r['p50']):.4g}"
            )
        columns = sorted(
            {c for got in cells.values() for c in got}, key=lambda c: (MODE_ORDER.index(c[0]), c[1] != "ms")
        )
        body = [
            [op, block or "default", f"{x_name}={x_value}", provider] + [got.get(c, "-") for c in columns]
            for (op, block, _, x_name, x_value, provider), got in sorted(cells.items())
        ]
        head = ["op", "launch config", "x", "provider", *(f"{mode} {unit}" for mode, unit in columns)]
        lines += [f"### {bench}", "", f"Config: {_config_line(chosen)}", "", *_table(head, body), ""]
    return lines


def _slug(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(p for p in parts if p))


def _chart(path: Path, title: str, x_name: str, unit: str, lines: dict[str, list[tuple[float, float]]]) -> Path:
    series = [Series(label, points) for label, points in lines.items()]
    xs = [x for s in series for x, _ in s.points]
    return line_chart(path, title, x_name, unit, series, log2_x=min(xs) > 0 and max(xs) >= 4 * min(xs))


def _step_charts(rows, plot_dir: Path) -> list[Path]:
    """Throughput against batch (samples/s) and sequence length (tokens/s), a line per provider."""
    charts: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    steps = step_benches(rows)
    for r in rows:
        wanted = "tokens_per_s" if r["x_name"] == "seq_len" else "samples_per_s"
        if r["bench"] in steps and r["metric"] == wanted:
            charts[(r["bench"], r["op"], r["x_name"], r["unit"])][r["provider"]].append((_x(r), float(r["p50"])))
    return [
        _chart(plot_dir / f"{_slug(bench, op, x_name)}.png", f"{bench}: {op} training step", x_name, unit, lines)
        for (bench, op, x_name, unit), lines in sorted(charts.items())
    ]


def _kernel_charts(rows, plot_dir: Path) -> list[Path]:
    """Per op: forward bandwidth against size, a line per provider (and launch config) and the copy ceiling; ops
    without bandwidth rows: forward time."""
    steps = step_benches(rows)
    kernels = [r for r in rows if r["bench"] not in steps and r["mode"] == "forward"]
    with_bandwidth = {(r["bench"], r["op"]) for r in kernels if r["metric"] == "bandwidth"}
    ceiling = {
        (r["bench"], r["x_value"]): float(r["p50"]) for r in kernels if r["op"] == "copy" and r["metric"] == "bandwidth"
    }
    charts: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in kernels:
        metric = "bandwidth" if (r["bench"], r["op"]) in with_bandwidth else "time"
        if r["op"] != "copy" and r["metric"] == metric:
            lines = charts[(r["bench"], r["op"], r["x_name"], metric, r["unit"])]
            lines[f"{r['provider']} {_block(r)}".strip()].append((_x(r), float(r["p50"])))
            if metric == "bandwidth" and (r["bench"], r["x_value"]) in ceiling:
                point = (_x(r), ceiling[(r["bench"], r["x_value"])])
                if point not in lines["copy (ceiling)"]:
                    lines["copy (ceiling)"].append(point)
    return [
        _chart(plot_dir / f"{_slug(bench, op, metric)}.png", f"{bench}: {op} forward", x_name, unit, lines)
        for (bench, op, x_name, metric, unit), lines in sorted(charts.items())
    ]


def _speedup_charts(rows, plot_dir: Path) -> list[Path]:
    """Per bench: bars of our speedup over each peer at each point, in the full mode where it was measured."""
    written = []
    by_bench: dict[str, list[dict]] = defaultdict(list)
    for s in speedups(rows):
        by_bench[s["bench"]].append(s)
    for bench, items in sorted(by_bench.items()):
        modes = {(s["op"], s["x_value"], s["block"]): s["mode"] for s in items}
        for s in items:  # prefer full over forward over backward at each point
            key = (s["op"], s["x_value"], s["block"])
            modes[key] = min(modes[key], s["mode"], key=("full", "forward", "backward").index)
        chosen = [s for s in items if s["mode"] == modes[(s["op"], s["x_value"], s["block"])]]
        groups = sorted({(s["op"], _x(s), s["x_name"], s["x_value"], s["block"]) for s in chosen})
        labels = [f"{op} {x_name}={x_value} {block}".strip() for op, _, x_name, x_value, block in groups]
        value = {(s["op"], s["x_value"], s["block"], s["peer"]): s["speedup"] for s in chosen}
        series = [(peer, [value.get((op, xv, block, peer)) for op, _, _, xv, block in groups])
                  for peer in sorted({s["peer"] for s in chosen})]  # fmt: skip
        path = plot_dir / f"{_slug('speedup', bench)}.png"
        written.append(bar_chart(path, f"{bench}: speedup of ours over each peer", "x faster", labels, series))
    return written


def plots(rows, plot_dir: Path) -> list[Path]:
    return _step_charts(rows, plot_dir) + _kernel_charts(rows, plot_dir) + _speedup_charts(rows, plot_dir)


def _speedup_section(rows) -> list[str]:
    gains = sorted(speedups(rows), key=lambda s: (s["bench"], s["op"], s["mode"], _x(s), s["block"], s["peer"]))
    body = [[s["bench"], s["op"], s["mode"], f"{s['x_name']}={s['x_value']}", s["block"] or "default", s["ours"],
             s["peer"], f"{s['speedup']:.2f}x"] for s in gains]  # fmt: skip
    head = ["bench", "op", "mode", "x", "launch config", "ours", "peer", "speedup"]
    return ["## Speedup over peers", "", *_table(head, body), ""] if body else []


def write(
    out_dir: Path,
    rows: list[dict[str, str]],
    old_rows: list[dict[str, str]] | None = None,
    percent: float | None = None,
    command: str | None = None,
    not_measured: list[str] = (),
):
    """report.md and plots/*.png in `out_dir`; returns (report path, plot paths, comparison changes)."""
    out_dir = Path(out_dir)
    if not rows:
        raise ValueError(f"{out_dir}: no result rows to report")
    lines = ["# vlbert_fast benchmarks", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [*_environment(rows), ""]
    step = _step_section(rows)
    if step:
        lines += ["## Training step", "", STEP_NOTE, "", *step]
    lines += _speedup_section(rows)
    kernels = _kernel_section(rows)
    if kernels:
        lines += ["## Kernels", "", "Median of the timed runs; GB/s = bytes the op must move / time.", "", *kernels]
    if not_measured:
        lines += ["## Not measured", "", *(f"- {item}" for item in not_measured), ""]
    changes = []
    if old_rows is not None:
        changes = comparing.compare(rows, old_rows)
        lines += ["## Comparison with earlier results", "", *comparing.markdown(changes, percent), ""]
    written = plots(rows, out_dir / "plots")
    lines += ["## Plots", "", *(f"![{p.stem}](plots/{p.name})" for p in written), ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path, written, changes
