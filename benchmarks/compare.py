"""This run against an earlier one: `--compare OLD.csv` (a results CSV, or a folder of them) and
`--fail-if-regression PCT`.

Rows match when bench, op, provider, mode, metric, unit, x_name, x_value and config_json are equal (the same
measurement of the same thing); of several old rows with one key the latest (by timestamp) counts. The change of
the median is new / old - 1. A regression is a change for the worse beyond PCT percent, where worse follows the
metric (`harness.METRICS`): a longer time or more memory, a lower rate or MFU. Properties of the input (the padding
share) are listed but never regress. Rows measured on another device are compared all the same and flagged, since
a comparison across machines says little.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .harness import METRICS, read_rows, result_files

KEY = ("bench", "op", "provider", "mode", "metric", "unit", "x_name", "x_value", "config_json")


def load(paths: Iterable[str | Path]) -> list[dict[str, str]]:
    """Rows of result CSVs; a folder stands for every harness CSV in it."""
    rows: list[dict[str, str]] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files = result_files(path)
            if not files:
                raise FileNotFoundError(f"--compare {path}: the folder holds no .csv results")
        elif path.is_file():
            files = [path]
        else:
            raise FileNotFoundError(f"--compare {path}: no such file or folder")
        for f in files:
            rows.extend(read_rows(f))
    return rows


def latest(rows: Iterable[dict[str, str]]) -> dict[tuple, dict[str, str]]:
    by_key: dict[tuple, dict[str, str]] = {}
    for row in rows:
        key = tuple(row[k] for k in KEY)
        if key not in by_key or row["timestamp"] >= by_key[key]["timestamp"]:
            by_key[key] = row
    return by_key


@dataclass
class Change:
    new: dict[str, str]
    old: dict[str, str]
    change: float
    """new p50 / old p50 - 1."""
    worse: float
    """How much worse, as a fraction (negative: better); 0 for metrics without a direction."""
    other_device: bool

    @property
    def label(self) -> str:
        r = self.new
        return f"{r['bench']}/{r['op']} {r['provider']} {r['mode']} {r['x_name']}={r['x_value']} {r['metric']}"


def compare(new_rows: Iterable[dict[str, str]], old_rows: Iterable[dict[str, str]]) -> list[Change]:
    """Changes of every new measurement that the old rows also hold."""
    old = latest(old_rows)
    changes = []
    for key, row in latest(new_rows).items():
        before = old.get(key)
        if before is None:
            continue
        new_p50, old_p50 = float(row["p50"]), float(before["p50"])
        if old_p50 == 0:
            continue
        change = new_p50 / old_p50 - 1.0
        direction = METRICS.get(row["metric"], ("", 0))[1]
        worse = -direction * change
        changes.append(Change(row, before, change, worse, row["device"] != before["device"]))
    return changes


def regressions(changes: Iterable[Change], percent: float) -> list[Change]:
    return [c for c in changes if c.worse > percent / 100.0]


def markdown(changes: list[Change], percent: float | None) -> list[str]:
    """Report lines: every compared measurement, worst first."""
    if not changes:
        return ["No measurement of this run matches one of the compared results."]
    limit = f", a regression is worse by more than {percent:g}%" if percent is not None else ""
    lines = [f"{len(changes)} measurements compared (median; + is a rise{limit}).", ""]
    lines += ["| measurement | unit | old | new | change | |", "|---|---|---|---|---|---|"]
    for c in sorted(changes, key=lambda c: -c.worse):
        flag = "REGRESSION" if percent is not None and c.worse > percent / 100.0 else ""
        if c.other_device:
            flag = (flag + " other device: " + c.old["device"]).strip()
        lines.append(
            f"| {c.label} | {c.new['unit']} | {float(c.old['p50']):.4g} | {float(c.new['p50']):.4g} | "
            f"{100 * c.change:+.1f}% | {flag} |"
        )
    return lines
