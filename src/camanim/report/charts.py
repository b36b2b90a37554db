"""Inline SVG charts of the report: per-layer bars (parameters, time) and the ybROAD curve."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..rundir import RunView
from .html import esc, fmt_int, fmt_number, get_in

_W, _H = 640, 190
_LEFT, _RIGHT, _TOP, _BOTTOM = 54, 14, 16, 30


@dataclass(frozen=True)
class _XScale:
    """x geometry shared by every chart of one report: layer i sits at x0 + i * dx."""

    n: int

    @property
    def dx(self) -> float:
        return (_W - _LEFT - _RIGHT) / self.n

    @property
    def x0(self) -> float:
        return _LEFT + self.dx / 2

    def x(self, i: float) -> float:
        return self.x0 + i * self.dx


def _nice_step(span: float, target_ticks: int = 4) -> float:
    raw = span / max(1, target_ticks)
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def _x_ticks(n: int) -> list[int]:
    if n == 1:
        return [0]
    step = max(1, int(_nice_step(n - 1, 6)))
    ticks = list(range(0, n, step))
    if (n - 1) - ticks[-1] >= step * 0.4:
        ticks.append(n - 1)
    return ticks


def _svg_open(element_id: str, frame: _XScale, title: str) -> list[str]:
    return [
        f'<svg class="cam-chart" id="{esc(element_id)}" viewBox="0 0 {_W} {_H}" role="img" '
        f'aria-label="{esc(title)}" data-n="{frame.n}" data-x0="{frame.x0:.3f}" data-dx="{frame.dx:.5f}">'
    ]


def _svg_axes(frame: _XScale, y_ticks: list[tuple[float, str]], x_label: str = "layer") -> list[str]:
    bottom = _H - _BOTTOM
    parts = []
    for y, label in y_ticks:
        parts.append(f'<line class="cam-grid" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text x="{_LEFT - 6}" y="{y + 3.5:.1f}" text-anchor="end">{esc(label)}</text>')
    parts.append(f'<path class="cam-axis" d="M{_LEFT},{_TOP} V{bottom} H{_W - _RIGHT}"/>')
    for i in _x_ticks(frame.n):
        x = frame.x(i)
        parts.append(f'<line class="cam-axis" x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}"/>')
        parts.append(f'<text x="{x:.1f}" y="{bottom + 15}" text-anchor="middle">{i}</text>')
    parts.append(f'<text x="{_W - _RIGHT}" y="{_H - 2}" text-anchor="end">{esc(x_label)}</text>')
    return parts


def _svg_hit_and_cursor(frame: _XScale) -> list[str]:
    # The transparent rect takes clicks anywhere in the plot (nearest layer);
    # it comes first so points drawn later still receive their own clicks.
    bottom = _H - _BOTTOM
    return [
        f'<rect class="cam-hit" x="{_LEFT}" y="{_TOP}" width="{_W - _LEFT - _RIGHT}" height="{bottom - _TOP}"/>',
        f'<line class="cam-cursor" x1="{frame.x0:.2f}" x2="{frame.x0:.2f}" y1="{_TOP - 4}" y2="{bottom}"/>',
    ]


def bar_chart(element_id: str, layers: list[dict[str, Any]], values: list[float | None], *,
               log: bool, unit: str, css: str, title: str) -> str:
    """An inline SVG bar chart with one bar per layer (the report's parameters and time plots).

    Args:
        element_id: the ``<svg>`` element's id.
        layers: the run's layer entries (``name`` is used in each bar's tooltip).
        values: one value per layer; None, 0 or negative values draw no bar.
        log: a log10 axis from 1 (values below 1 draw no bar) instead of a linear axis from 0.
        unit: unit shown in the tooltips (``"params"``, ``"ms"``).
        css: extra CSS class of the bars.
        title: the chart's accessible label.

    Returns:
        The ``<svg>...</svg>`` markup.
    """
    frame = _XScale(len(layers))
    bottom, height = _H - _BOTTOM, _H - _BOTTOM - _TOP
    finite = [v for v in values if v is not None and v > 0]
    vmax = max(finite, default=0.0)
    if log:
        top_decade = max(1, math.ceil(math.log10(vmax))) if vmax >= 1 else 1
        stride = max(1, math.ceil(top_decade / 5))
        ticks = [(bottom - d / top_decade * height, fmt_number(10.0**d)) for d in range(0, top_decade + 1, stride)]

        def y_of(v: float) -> float:
            return bottom - (math.log10(v) / top_decade * height if v >= 1 else 0.0)
    else:
        step = _nice_step(vmax or 1.0)
        top_value = step * math.ceil((vmax or 1.0) / step)
        ticks = [(bottom - k * step / top_value * height, fmt_number(k * step))
                 for k in range(round(top_value / step) + 1)]

        def y_of(v: float) -> float:
            return bottom - v / top_value * height

    parts = _svg_open(element_id, frame, title) + _svg_axes(frame, ticks) + _svg_hit_and_cursor(frame)
    width = max(frame.dx * (0.8 if frame.dx > 3 else 1.0), 0.6)
    for i, (layer, value) in enumerate(zip(layers, values, strict=True)):
        if value is None or value <= 0 or (log and value < 1):
            continue
        y = y_of(value)
        label = f"{i} {layer.get('name', '')}: {fmt_int(value) if log else f'{value:.3g}'} {unit}"
        parts.append(
            f'<rect class="cam-bar {css}" data-index="{i}" x="{frame.x(i) - width / 2:.2f}" y="{y:.2f}" '
            f'width="{width:.2f}" height="{bottom - y:.2f}"><title>{esc(label)}</title></rect>'
        )
    parts.append("</svg>")
    return "".join(parts)


def ybroad_series(run: RunView) -> dict[str, Any] | None:
    """ybROAD per manifest layer (None where undefined), matched by index then by name."""
    if not run.ybroad:
        return None
    entries = [e for e in run.ybroad.get("layers", []) if isinstance(e, dict)]
    by_index = {e.get("index"): e for e in entries}
    values: list[float | None] = []
    stds: list[float | None] = []
    for i, layer in enumerate(run.layers):
        entry = by_index.get(layer.get("index", i))
        if entry is None or entry.get("name", layer.get("name")) != layer.get("name"):
            entry = next((e for e in entries if e.get("name") == layer.get("name")), {})
        value, std = entry.get("ybroad"), entry.get("ybroad_std")
        ok = entry.get("defined", True) and isinstance(value, (int, float)) and math.isfinite(value)
        values.append(float(value) if ok else None)
        stds.append(float(std) if ok and isinstance(std, (int, float)) and math.isfinite(std) else None)
    if all(v is None for v in values):
        return None
    best_index = get_in(run.ybroad, "ybroad_max", "index")
    positions = {layer.get("index", i): i for i, layer in enumerate(run.layers)}
    best = positions.get(best_index) if isinstance(best_index, int) else None
    if best is None or values[best] is None:
        best = max((i for i, v in enumerate(values) if v is not None), key=lambda i: values[i])
    return {
        "values": values,
        "std": stds,
        "best": best,
        "mean": run.ybroad.get("ybroad_mean"),
        "percentiles": run.ybroad.get("percentiles"),
        "percent_meaning": run.ybroad.get("percent_meaning"),
        "score": run.ybroad.get("score"),
        "trials": run.ybroad.get("trials"),
    }


def ybroad_chart(element_id: str, layers: list[dict[str, Any]], series: dict[str, Any]) -> str:
    """An inline SVG line chart of ybROAD per layer, with a +-1 std band and the best layer marked.

    Args:
        element_id: the ``<svg>`` element's id.
        layers: the run's layer entries (``name`` is used in the tooltips).
        series: ``values`` and ``std`` (one float or None per layer; None breaks the line) and
            ``best``, the index of the best layer (its value must not be None).

    Returns:
        The ``<svg>...</svg>`` markup.
    """
    frame = _XScale(len(layers))
    values: list[float | None] = series["values"]
    stds: list[float | None] = series["std"]
    best: int = series["best"]
    bottom, height = _H - _BOTTOM, _H - _BOTTOM - _TOP
    lows = [v - (s or 0) for v, s in zip(values, stds, strict=True) if v is not None]
    highs = [v + (s or 0) for v, s in zip(values, stds, strict=True) if v is not None]
    lo, hi = min(lows), max(highs)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    # Headroom: the best layer is the maximum, and its label goes above it.
    hi += 0.15 * (hi - lo)
    step = _nice_step(hi - lo)
    lo, hi = step * math.floor(lo / step), step * math.ceil(hi / step)

    def y_of(v: float) -> float:
        return bottom - (v - lo) / (hi - lo) * height

    ticks = [(y_of(lo + k * step), f"{lo + k * step:.3g}") for k in range(round((hi - lo) / step) + 1)]
    parts = _svg_open(element_id, frame, "ybROAD per layer") + _svg_axes(frame, ticks)
    if lo < 0 < hi:
        parts.append(f'<line class="cam-zero" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y_of(0):.1f}" y2="{y_of(0):.1f}"/>')
    parts += _svg_hit_and_cursor(frame)

    # Contiguous runs of defined layers: undefined ones break the line, they are not zero.
    segments: list[list[int]] = []
    for i, v in enumerate(values):
        if v is None:
            continue
        if segments and segments[-1][-1] == i - 1:
            segments[-1].append(i)
        else:
            segments.append([i])
    for seg in segments:
        if any(stds[i] is not None for i in seg) and len(seg) > 1:
            upper = [f"{frame.x(i):.2f},{y_of(values[i] + (stds[i] or 0)):.2f}" for i in seg]
            lower = [f"{frame.x(i):.2f},{y_of(values[i] - (stds[i] or 0)):.2f}" for i in reversed(seg)]
            parts.append(f'<polygon class="cam-yb-band" points="{" ".join(upper + lower)}"/>')
        if len(seg) > 1:
            points = " ".join(f"{frame.x(i):.2f},{y_of(values[i]):.2f}" for i in seg)
            parts.append(f'<polyline class="cam-yb-line" points="{points}"/>')

    radius = 3.2 if frame.n <= 60 else 2.2 if frame.n <= 200 else 1.6
    # Outlined points hide the line when hundreds of them overlap.
    point_class = "cam-yb-point" if frame.n <= 60 else "cam-yb-point cam-dense"
    for i, v in enumerate(values):
        if v is None or i == best:
            continue
        label = f"{i} {layers[i].get('name', '')}: ybROAD {v:.4g}"
        parts.append(
            f'<circle class="{point_class}" data-index="{i}" cx="{frame.x(i):.2f}" cy="{y_of(v):.2f}" '
            f'r="{radius}"><title>{esc(label)}</title></circle>'
        )
    # The best layer is drawn last so it sits on top of its neighbours.
    bx, by = frame.x(best), y_of(values[best])
    label = f"best: {best} {layers[best].get('name', '')} ({values[best]:.4g})"
    parts.append(
        f'<circle class="cam-yb-point cam-best" data-index="{best}" cx="{bx:.2f}" cy="{by:.2f}" '
        f'r="{radius + 2.6:.1f}"><title>{esc(label)}</title></circle>'
    )
    # Label on the side with more room, cut to fit (about 6.6 units per bold character).
    room_right, room_left = _W - _RIGHT - bx - 8, bx - _LEFT - 8
    anchor, x_text, room = ("start", bx + 8, room_right) if room_right >= room_left else ("end", bx - 8, room_left)
    max_chars = max(8, int(room / 6.6))
    short = label if len(label) <= max_chars else label[: max_chars - 1] + "…"
    parts.append(
        f'<text class="cam-best-label" x="{x_text:.1f}" y="{max(by - 7, _TOP + 4):.1f}" '
        f'text-anchor="{anchor}">{esc(short)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)
