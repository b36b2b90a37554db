"""Inline SVG charts of the report: per-layer bars (parameters, time) and the ybROAD curve."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..rundir import RunView
from .html import esc, fmt_int, fmt_number, get_in

_W, _H = 640, 190
_LEFT, _RIGHT, _TOP, _BOTTOM = 62, 14, 16, 30


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
        parts.append(f'<text x="{x:.1f}" y="{bottom + 15}" text-anchor="middle">{i + 1}</text>')  # layers count from 1
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
        label = f"{i + 1} {layer.get('name', '')}: {fmt_int(value) if log else f'{value:.3g}'} {unit}"
        parts.append(
            f'<rect class="cam-bar {css}" data-index="{i}" x="{frame.x(i) - width / 2:.2f}" y="{y:.2f}" '
            f'width="{width:.2f}" height="{bottom - y:.2f}"><title>{esc(label)}</title></rect>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        else None


def ybroad_series(run: RunView) -> dict[str, Any] | None:
    """ybROAD per manifest layer (None where undefined), matched by index then by name, with what the
    report shows of it: each layer's interval (``low``/``high``: the 95% CI, or ± 1 std in an older
    ``ybroad.json``), the MoRF and LeRF curves, the chance band, the layers above it, the best
    candidate, its aliases and notes, the statement and the warnings."""
    if not run.ybroad:
        return None
    yb = run.ybroad
    entries = [e for e in yb.get("layers", []) if isinstance(e, dict)]
    by_index = {e.get("index"): e for e in entries}
    values: list[float | None] = []
    stds: list[float | None] = []
    lows: list[float | None] = []
    highs: list[float | None] = []
    curves: dict[str, list[float | None]] = {"morf": [], "lerf": []}
    above: list[bool | None] = []
    notes: list[str | None] = []
    for i, layer in enumerate(run.layers):
        entry = by_index.get(layer.get("index", i))
        if entry is None or entry.get("name", layer.get("name")) != layer.get("name"):
            entry = next((e for e in entries if e.get("name") == layer.get("name")), {})
        value, std = _num(entry.get("ybroad")), _num(entry.get("ybroad_std"))
        ok = bool(entry.get("defined", True)) and value is not None
        values.append(value if ok else None)
        stds.append(std if ok else None)
        ci = entry.get("ybroad_ci")
        if ok and isinstance(ci, list) and len(ci) == 2 and None not in (_num(ci[0]), _num(ci[1])):
            lows.append(_num(ci[0]))
            highs.append(_num(ci[1]))
        elif ok and std is not None and "ybroad_ci" not in entry:
            lows.append(value - std)
            highs.append(value + std)
        else:
            lows.append(None)
            highs.append(None)
        for key in curves:
            curves[key].append(_num(entry.get(f"{key}_mean")) if ok else None)
        flag = entry.get("above_baseline")
        above.append(flag if isinstance(flag, bool) and ok else None)
        note = entry.get("note")
        notes.append(str(note) if note else None)
    if all(v is None for v in values):
        return None
    best_entry = yb.get("best") if isinstance(yb.get("best"), dict) else None
    best_index = best_entry.get("index") if best_entry else get_in(yb, "ybroad_max", "index")
    positions = {layer.get("index", i): i for i, layer in enumerate(run.layers)}
    best = positions.get(best_index) if isinstance(best_index, int) else None
    if best is None or values[best] is None:
        best = max((i for i, v in enumerate(values) if v is not None), key=lambda i: values[i])
    baseline = yb.get("baseline") if isinstance(yb.get("baseline"), dict) else None
    band = baseline.get("band") if baseline else None
    band_pair = [_num(band[0]), _num(band[1])] if isinstance(band, list) and len(band) == 2 else None
    warnings = [str(w) for w in yb.get("warnings", []) if w] if isinstance(yb.get("warnings"), list) else []
    has_ci = any("ybroad_ci" in e for e in entries)
    return {
        "values": values,
        "std": stds,
        "low": lows,
        "high": highs,
        "interval": "95% CI over trials" if has_ci else "± 1 std over trials",
        "morf": curves["morf"] if any(v is not None for v in curves["morf"]) else None,
        "lerf": curves["lerf"] if any(v is not None for v in curves["lerf"]) else None,
        "above": above,
        "notes": notes,
        "best": best,
        "aliases": list(best_entry.get("aliases") or []) if best_entry else [],
        "best_info": best_entry,
        "candidates": [c for c in yb.get("candidates", []) if isinstance(c, dict)],
        "baseline": {
            "band": band_pair if band_pair and None not in band_pair else None,
            "mean": _num(baseline.get("ybroad")) if baseline else None,
            "morf": _num(baseline.get("morf_mean")) if baseline else None,
            "lerf": _num(baseline.get("lerf_mean")) if baseline else None,
        } if baseline else None,
        "warnings": warnings,
        "statement": yb.get("statement") if isinstance(yb.get("statement"), str) else None,
        "mean": yb.get("ybroad_mean"),
        "percentiles": yb.get("percentiles"),
        "percent_meaning": yb.get("percent_meaning"),
        "score": yb.get("score"),
        "score_label": yb.get("score_label") or (f"Δ {yb['score']}" if yb.get("score") else "Δ score"),
        "trials": yb.get("trials"),
    }


def _y_scale(lo: float, hi: float, headroom: float) -> tuple[float, float, float]:
    """(low, high, step) of a value axis over [lo, hi] with ``headroom`` of the span free at the top."""
    if hi - lo < 1e-12:
        pad = max(abs(hi), 1e-6) * 0.5
        lo, hi = lo - pad, hi + pad
    hi += headroom * (hi - lo)
    step = _nice_step(hi - lo)
    return step * math.floor(lo / step), step * math.ceil(hi / step), step


def _value_axis(pool: Sequence[float], headroom: float) -> tuple[Callable[[float], float], list[tuple[float, str]], float, float]:
    """A value axis over ``pool`` (see :func:`_y_scale`): the value -> y mapping, the ticks (y, label), low, high."""
    lo, hi, step = _y_scale(min(pool), max(pool), headroom)
    bottom, height = _H - _BOTTOM, _H - _BOTTOM - _TOP

    def y_of(v: float) -> float:
        return bottom - (v - lo) / (hi - lo) * height

    ticks = [(y_of(lo + k * step), f"{lo + k * step:.3g}") for k in range(round((hi - lo) / step) + 1)]
    return y_of, ticks, lo, hi


def _y_label(text: str) -> str:
    """The rotated y-axis label at the chart's left edge (the score used)."""
    y = (_TOP + _H - _BOTTOM) / 2
    return (f'<text class="cam-y-label" x="11" y="{y:.1f}" text-anchor="middle" '
            f'transform="rotate(-90 11 {y:.1f})">{esc(text)}</text>')


def _segments(values: list[float | None]) -> list[list[int]]:
    """Contiguous runs of defined layers: undefined ones break the line, they are not zero."""
    segments: list[list[int]] = []
    for i, v in enumerate(values):
        if v is None:
            continue
        if segments and segments[-1][-1] == i - 1:
            segments[-1].append(i)
        else:
            segments.append([i])
    return segments


def ybroad_chart(element_id: str, layers: list[dict[str, Any]], series: dict[str, Any]) -> str:
    """An inline SVG line chart of ybROAD per layer: each layer's interval as a band, the chance band of
    random pixel rankings, layers above it filled, and the best candidate (with its aliases) marked: a
    large dot when the verdict has no warning, a ring otherwise. The y axis names the score used.

    Args:
        element_id: the ``<svg>`` element's id.
        layers: the run's layer entries (``name`` is used in the tooltips).
        series: :func:`ybroad_series`: ``values``, ``low``/``high`` (one float or None per layer; None
            breaks the line), ``best`` (its value must not be None), ``baseline``, ``above``,
            ``aliases``, ``warnings``, ``score_label``.

    Returns:
        The ``<svg>...</svg>`` markup.
    """
    frame = _XScale(len(layers))
    values: list[float | None] = series["values"]
    lows: list[float | None] = series.get("low") or [None] * len(values)
    highs: list[float | None] = series.get("high") or [None] * len(values)
    above: list[bool | None] = series.get("above") or [None] * len(values)
    best: int | None = series["best"]  # None: no layer is best (every scored layer ties)
    band = (series.get("baseline") or {}).get("band")
    pool = [v for v in values if v is not None] + [v for v in lows + highs if v is not None] + (band or [])
    y_of, ticks, lo, hi = _value_axis(pool, 0.15)
    parts = _svg_open(element_id, frame, f"{series.get('value_name', 'ybROAD')} per layer") + _svg_axes(frame, ticks)
    parts.append(_y_label(series.get("y_label") or f"ROAD ({series.get('score_label') or 'Δ score'})"))
    if band:
        y_top, y_bottom = y_of(band[1]), y_of(band[0])
        parts.append(f'<rect class="cam-chance" x="{_LEFT}" y="{y_top:.2f}" width="{_W - _LEFT - _RIGHT}" '
                     f'height="{max(y_bottom - y_top, 0.8):.2f}"><title>chance band (random pixel rankings): '
                     f'{band[0]:.4g} to {band[1]:.4g}</title></rect>')
    if lo < 0 < hi:
        parts.append(f'<line class="cam-zero" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y_of(0):.1f}" y2="{y_of(0):.1f}"/>')
    parts += _svg_hit_and_cursor(frame)
    for seg in _segments(values):
        with_ci = [i for i in seg if lows[i] is not None and highs[i] is not None]
        if len(with_ci) > 1 and len(with_ci) == len(seg):
            upper = [f"{frame.x(i):.2f},{y_of(highs[i]):.2f}" for i in seg]
            lower = [f"{frame.x(i):.2f},{y_of(lows[i]):.2f}" for i in reversed(seg)]
            parts.append(f'<polygon class="cam-yb-band" points="{" ".join(upper + lower)}"/>')
        if len(seg) > 1:
            points = " ".join(f"{frame.x(i):.2f},{y_of(values[i]):.2f}" for i in seg)
            parts.append(f'<polyline class="cam-yb-line" points="{points}"/>')

    radius = 3.2 if frame.n <= 60 else 2.2 if frame.n <= 200 else 1.6
    point_class = "cam-yb-point" if frame.n <= 60 else "cam-yb-point cam-dense"
    for i, v in enumerate(values):
        if v is None or i == best:
            continue
        ci = f" [{lows[i]:.4g}, {highs[i]:.4g}]" if lows[i] is not None and highs[i] is not None else ""
        mark = " (not above chance)" if above[i] is False else ""
        label = f"{i + 1} {layers[i].get('name', '')}: {series.get('value_name', 'ybROAD')} {v:.4g}{ci}{mark}"
        css = point_class + (" cam-below" if above[i] is False else "")
        parts.append(
            f'<circle class="{css}" data-index="{i}" cx="{frame.x(i):.2f}" cy="{y_of(v):.2f}" '
            f'r="{radius}"><title>{esc(label)}</title></circle>'
        )
    if best is None:  # every scored layer ties: the line is drawn, no layer is marked best
        parts.append(f'<text class="cam-best-label" x="{_LEFT + 8}" y="{_TOP + 8}" text-anchor="start">'
                     "all layers tie: no best layer</text></svg>")
        return "".join(parts)
    bx, by = frame.x(best), y_of(values[best])
    aliases = series.get("aliases") or []
    warned = bool(series.get("warnings"))
    alias_text = f" = {', '.join(aliases)}" if aliases else ""
    head = "highest (see warning)" if warned else "best"
    label = f"{head}: {best + 1} {layers[best].get('name', '')}{alias_text} ({values[best]:.4g})"
    css = "cam-yb-point cam-best cam-warned" if warned else "cam-yb-point cam-best"
    parts.append(
        f'<circle class="{css}" data-index="{best}" cx="{bx:.2f}" cy="{by:.2f}" '
        f'r="{radius + 2.6:.1f}"><title>{esc(label)}</title></circle>'
    )
    room_right, room_left = _W - _RIGHT - bx - 8, bx - _LEFT - 8
    anchor, x_text, room = ("start", bx + 8, room_right) if room_right >= room_left else ("end", bx - 8, room_left)
    max_chars = max(8, int(room / 6.6))
    short = label if len(label) <= max_chars else label[: max_chars - 1] + "…"
    parts.append(
        f'<text class="cam-best-label" x="{x_text:.1f}" y="{max(by - 7, _TOP + 8):.1f}" '
        f'text-anchor="{anchor}"><title>{esc(label)}</title>{esc(short)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def road_curves_chart(element_id: str, layers: list[dict[str, Any]], series: dict[str, Any]) -> str | None:
    """An inline SVG chart of the two curves ROAD combines, ``C_MoRF`` and ``C_LeRF`` per layer (mean
    over percentages), with the random rankings' values as dashed lines; None when the series has no
    MoRF/LeRF means (an older ``ybroad.json``).

    Returns:
        The ``<svg>...</svg>`` markup, or None.
    """
    morf, lerf = series.get("morf"), series.get("lerf")
    if morf is None or lerf is None:
        return None
    frame = _XScale(len(layers))
    baseline = series.get("baseline") or {}
    chance = {"morf": baseline.get("morf"), "lerf": baseline.get("lerf")}
    pool = [v for v in morf + lerf if v is not None] + [v for v in chance.values() if v is not None] + [0.0]
    y_of, ticks, lo, hi = _value_axis(pool, 0.12)
    parts = _svg_open(element_id, frame, "MoRF and LeRF per layer") + _svg_axes(frame, ticks)
    parts.append(_y_label(f"C ({series.get('score_label') or 'Δ score'})"))
    if lo < 0 < hi:
        parts.append(f'<line class="cam-zero" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y_of(0):.1f}" y2="{y_of(0):.1f}"/>')
    parts += _svg_hit_and_cursor(frame)
    for key, values in (("morf", morf), ("lerf", lerf)):
        if chance[key] is not None:
            y = y_of(chance[key])
            parts.append(f'<line class="cam-{key}-chance" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.2f}" y2="{y:.2f}">'
                         f"<title>{key.upper()} of random rankings: {chance[key]:.4g}</title></line>")
        for seg in _segments(values):
            if len(seg) > 1:
                points = " ".join(f"{frame.x(i):.2f},{y_of(values[i]):.2f}" for i in seg)
                parts.append(f'<polyline class="cam-{key}-line" points="{points}"/>')
            else:
                i = seg[0]
                parts.append(f'<circle class="cam-{key}-line" cx="{frame.x(i):.2f}" cy="{y_of(values[i]):.2f}" r="2"/>')
    # legend, top left, inside the plot
    for k, (key, text) in enumerate((("morf", "MoRF: most relevant removed first"),
                                     ("lerf", "LeRF: least relevant removed first"))):
        y = _TOP + 8 + 13 * k
        parts.append(f'<line class="cam-{key}-line" x1="{_LEFT + 8}" x2="{_LEFT + 26}" y1="{y - 3}" y2="{y - 3}"/>'
                     f'<text class="cam-legend" x="{_LEFT + 30}" y="{y}">{esc(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)
