"""A two-panel line chart written as SVG by hand (no plotting library): throughput achieved and
p99 latency against offered load, one line per system (bench/e2e.py's sweep)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 420, 300
LEFT, RIGHT, TOP, BOTTOM = 60, 20, 40, 50
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]  # (x, y)


@dataclass(frozen=True)
class Panel:
    title: str
    x_label: str
    y_label: str
    series: Sequence[Series]
    diagonal: bool = False  # draw y = x (throughput equal to the offered load)


def nice_max(value: float) -> float:
    """The least of 1, 2, 2.5 or 5 times a power of ten at or above `value` (an axis' end)."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 2.5, 5, 10) if step * power >= value * 0.999999)


def _panel(panel: Panel, dx: float) -> list[str]:
    xs = [x for s in panel.series for x, _ in s.points]
    ys = [y for s in panel.series for _, y in s.points]
    x_max, y_max = nice_max(max(xs, default=1)), nice_max(max(ys, default=1))
    w, h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def at(x: float, y: float) -> tuple[float, float]:
        return dx + LEFT + w * x / x_max, TOP + h * (1 - y / y_max)

    out = [
        f'<text x="{dx + WIDTH / 2}" y="22" text-anchor="middle" font-size="14">'
        f"{escape(panel.title)}</text>",
        f'<rect x="{dx + LEFT}" y="{TOP}" width="{w}" height="{h}" fill="none" stroke="#888"/>',
    ]
    for tick in range(6):
        tx, ty = at(x_max * tick / 5, y_max * tick / 5)
        out.append(f'<text x="{tx:.1f}" y="{TOP + h + 16}" text-anchor="middle" font-size="11">'
                   f"{x_max * tick / 5:g}</text>")  # fmt: skip
        out.append(f'<text x="{dx + LEFT - 6}" y="{ty + 4:.1f}" text-anchor="end" font-size="11">'
                   f"{y_max * tick / 5:g}</text>")  # fmt: skip
        out.append(f'<line x1="{dx + LEFT}" y1="{ty:.1f}" x2="{dx + LEFT + w}" y2="{ty:.1f}" '
                   'stroke="#eee"/>')  # fmt: skip
    out.append(f'<text x="{dx + LEFT + w / 2}" y="{HEIGHT - 12}" text-anchor="middle" '
               f'font-size="12">{escape(panel.x_label)}</text>')  # fmt: skip
    out.append(f'<text transform="translate({dx + 16},{TOP + h / 2}) rotate(-90)" '
               f'text-anchor="middle" font-size="12">{escape(panel.y_label)}</text>')  # fmt: skip
    if panel.diagonal:
        (x0, y0), (x1, y1) = at(0, 0), at(min(x_max, y_max), min(x_max, y_max))
        out.append(f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" '
                   'stroke="#aaa" stroke-dasharray="4 3"/>')  # fmt: skip
    for index, series in enumerate(panel.series):
        colour = COLOURS[index % len(COLOURS)]
        points = " ".join(f"{px:.1f},{py:.1f}" for px, py in (at(*p) for p in series.points))
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in series.points:
            px, py = at(x, y)
            out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}"/>')
        lx, ly = dx + LEFT + 10, TOP + 16 + 16 * index
        out.append(f'<text x="{lx}" y="{ly}" font-size="12" fill="{colour}">'
                   f"{escape(series.name)}</text>")  # fmt: skip
    return out


def render(panels: Sequence[Panel], caption: str = "") -> str:
    """The panels side by side, with a caption under them."""
    width, height = WIDTH * len(panels), HEIGHT + (20 if caption else 0)
    body = [line for i, panel in enumerate(panels) for line in _panel(panel, i * WIDTH)]
    if caption:
        body.append(f'<text x="{width / 2}" y="{HEIGHT + 12}" text-anchor="middle" '
                    f'font-size="11" fill="#555">{escape(caption)}</text>')  # fmt: skip
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">\n'
        f'<rect width="{width}" height="{height}" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n"
    )
