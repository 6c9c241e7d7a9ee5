"""Charts as PNG with Pillow alone (matplotlib is not a dependency): a line chart (throughput against batch size,
sequence length or problem size, one line per provider) and a grouped bar chart (speedup over each peer).

Both draw a frame with ticks at round values (1, 2 or 5 times a power of ten; powers of two on a log2 axis), axis
labels, a title and a legend to the right of the plot area. Colours come from one fixed palette, so a provider keeps
its colour from chart to chart when the series are given in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

SIZE = (960, 560)
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
MARGIN = {"left": 90, "right": 230, "top": 50, "bottom": 70}  # the right margin holds the legend


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    """(x, y) pairs; drawn in x order."""


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, AttributeError, OSError):  # Pillow < 10.1, or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    value = start
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 12))
    return ticks


def _label(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e6 or magnitude < 1e-3:
        return f"{value:.1e}"
    if magnitude >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


class _Canvas:
    def __init__(self, title: str, x_label: str, y_label: str, size: tuple[int, int]):
        self.image = Image.new("RGB", size, "white")
        self.draw = ImageDraw.Draw(self.image)
        self.font, self.small = _font(15), _font(12)
        w, h = size
        self.box = (MARGIN["left"], MARGIN["top"], w - MARGIN["right"], h - MARGIN["bottom"])
        self.draw.text((w // 2 - MARGIN["right"] // 2, 18), title, fill="black", font=self.font, anchor="mm")
        x0, y0, x1, y1 = self.box
        self.draw.text(((x0 + x1) // 2, h - 22), x_label, fill="black", font=self.font, anchor="mm")
        label = Image.new("RGB", (y1 - y0, 22), "white")
        ImageDraw.Draw(label).text(((y1 - y0) // 2, 11), y_label, fill="black", font=self.font, anchor="mm")
        self.image.paste(label.rotate(90, expand=True), (8, y0))

    def y_axis(self, ticks: list[float]) -> None:
        self.y_lo, self.y_hi = ticks[0], ticks[-1]
        x0, _, x1, _ = self.box
        for t in ticks:
            y = self.y(t)
            self.draw.line([(x0, y), (x1, y)], fill="#e6e6e6")
            self.draw.text((x0 - 8, y), _label(t), fill="black", font=self.small, anchor="rm")

    def y(self, value: float) -> float:
        _, y0, _, y1 = self.box
        return y1 - (value - self.y_lo) / (self.y_hi - self.y_lo) * (y1 - y0)

    def x_tick(self, x: float, text: str) -> None:
        y1 = self.box[3]
        self.draw.line([(x, y1), (x, y1 + 5)], fill="black")
        self.draw.text((x, y1 + 8), text, fill="black", font=self.small, anchor="ma")

    def legend(self, labels: Sequence[str]) -> None:
        x = self.box[2] + 20
        for i, label in enumerate(labels):
            y = self.box[1] + 10 + 22 * i
            self.draw.rectangle([x, y - 6, x + 14, y + 6], fill=PALETTE[i % len(PALETTE)])
            self.draw.text((x + 22, y), label, fill="black", font=self.small, anchor="lm")

    def save(self, path: Path) -> Path:
        self.draw.rectangle(self.box, outline="black")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.image.save(path, format="PNG")
        return path


def line_chart(
    path: Path, title: str, x_label: str, y_label: str, series: Sequence[Series], log2_x: bool = False, size=SIZE
) -> Path:
    """One line with markers per series; the y axis starts at 0; `log2_x` spaces x by its logarithm."""
    series = [s for s in series if s.points]
    if not series:
        raise ValueError(f"{path}: no series has points to plot")
    xs = sorted({x for s in series for x, _ in s.points})
    if log2_x and min(xs) <= 0:
        raise ValueError(f"{path}: a log2 x axis needs positive x values, found {min(xs)}")
    canvas = _Canvas(title, x_label, y_label, size)
    canvas.y_axis(nice_ticks(0.0, max(y for s in series for _, y in s.points)))
    scale = (lambda v: math.log2(v)) if log2_x else (lambda v: v)
    lo, hi = scale(xs[0]), scale(xs[-1])
    x0, _, x1, _ = canvas.box
    pad = 30

    def px(v: float) -> float:
        return (x0 + x1) / 2 if hi == lo else x0 + pad + (scale(v) - lo) / (hi - lo) * (x1 - x0 - 2 * pad)

    for x in xs if len(xs) <= 12 else nice_ticks(xs[0], xs[-1]):
        if xs[0] <= x <= xs[-1]:
            canvas.x_tick(px(x), _label(x))
    for i, s in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        points = [(px(x), canvas.y(y)) for x, y in sorted(s.points)]
        if len(points) > 1:
            canvas.draw.line(points, fill=colour, width=3)
        for x, y in points:
            canvas.draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
    canvas.legend([s.label for s in series])
    return canvas.save(path)


def bar_chart(
    path: Path,
    title: str,
    y_label: str,
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    baseline: float | None = 1.0,
    size=SIZE,
) -> Path:
    """Bars of each series side by side within each group (None: no bar); a dashed line at `baseline` (a speedup
    of 1: as fast as the peer)."""
    values = [v for _, vs in series for v in vs if v is not None]
    if not groups or not values:
        raise ValueError(f"{path}: nothing to plot")
    for label, vs in series:
        if len(vs) != len(groups):
            raise ValueError(f"{path}: series {label!r} has {len(vs)} values for {len(groups)} groups")
    canvas = _Canvas(title, "", y_label, size)
    top = max(values + ([baseline] if baseline is not None else []))
    canvas.y_axis(nice_ticks(0.0, top))
    x0, _, x1, _ = canvas.box
    slot = (x1 - x0) / len(groups)
    width = slot * 0.8 / len(series)
    for g, group in enumerate(groups):
        left = x0 + g * slot + slot * 0.1
        canvas.x_tick(x0 + (g + 0.5) * slot, group)
        for i, (_, vs) in enumerate(series):
            if vs[g] is not None:
                bx = left + i * width
                canvas.draw.rectangle(
                    [bx, canvas.y(vs[g]), bx + width - 2, canvas.y(0)], fill=PALETTE[i % len(PALETTE)]
                )
    if baseline is not None:
        y = canvas.y(baseline)
        for x in range(int(x0), int(x1), 12):
            canvas.draw.line([(x, y), (min(x + 6, x1), y)], fill="black", width=1)
    canvas.legend([label for label, _ in series])
    return canvas.save(path)
