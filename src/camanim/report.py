"""HTML report, layer plots and multi-run comparison for finished runs.

Everything here reads a run folder (``manifest.json``, ``frames/<norm>/NNNN.png``,
optionally ``ybroad.json``) and nothing else, so a report can be rebuilt, or
runs compared, long after the model is gone.

The report is one self-contained HTML file: styles, scripts and every frame
are inlined (frames as base64 WebP, JPEG where Pillow lacks WebP), so it opens
from disk, offline, and can be mailed as it is. Frames are held in a JSON
array and put into two ``<img>`` elements on demand, rather than as one
``<img>`` per frame: a 571-layer DenseNet161 report (1142 frames of 320x384)
is about 15 MB and opens in about a second.

Example:
    >>> from camanim.report import build_report, compare
    >>> build_report("camanim-out")                      # doctest: +SKIP
    PosixPath('camanim-out/report.html')
    >>> compare(["out-gradcam", "out-scorecam"], "cmp")  # doctest: +SKIP
    {'html': PosixPath('cmp/compare.html'), 'video': PosixPath('cmp/compare_grid.mp4')}
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
import secrets
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps, features

from camanim._report_template import COMPARE_JS, PAGE_STYLE, REPORT_JS, STYLE
from camanim.errors import InputError

__all__ = ["align_by_depth", "build_report", "compare", "report_html"]

logger = logging.getLogger(__name__)

REPORT_NAME = "report.html"
PARAMS_PLOT_NAME = "layer_params.png"
TIME_PLOT_NAME = "layer_time.png"
COMPARE_NAME = "compare.html"
COMPARE_VIDEO_NAME = "compare_grid.mp4"

# WebP at quality 80 keeps a 320x384 CAM overlay near 10 kB (JPEG: ~16 kB) at
# no visible cost; method 2 is ~3x faster to encode than the default 4 for
# about 5% more bytes, which matters with ~1100 frames to encode.
_WEBP_OPTIONS = {"quality": 80, "method": 2}
_JPEG_OPTIONS = {"quality": 80, "optimize": True}
_DEFAULT_FPS = 10
_HOW_TO_MAKE_A_RUN = "pass the folder written by `camanim run IMAGE --out DIR`"


# --------------------------------------------------------------------------- #
# Reading a run folder
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class _Run:
    """What the report needs from one run folder, checked once on load."""

    path: Path
    manifest: dict[str, Any]
    layers: list[dict[str, Any]]
    frames: dict[str, list[Path]]  # normalisation -> one frame per layer, in layer order
    ybroad: dict[str, Any] | None

    @property
    def model_name(self) -> str:
        return str(_get(self.manifest, "model", "name", default="model"))

    @property
    def method(self) -> str:
        method = self.manifest.get("method", "?")
        return ", ".join(map(str, method)) if isinstance(method, list) else str(method)

    @property
    def fps(self) -> int:
        fps = self.manifest.get("fps")
        return int(fps) if isinstance(fps, (int, float)) and fps > 0 else _DEFAULT_FPS


def _get(mapping: Any, *keys: str, default: Any = None) -> Any:
    for key in keys:
        if not isinstance(mapping, dict) or key not in mapping:
            return default
        mapping = mapping[key]
    return mapping


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); {what}"
        ) from exc
    except OSError as exc:
        raise InputError(f"cannot read {path} ({exc.strerror}); check its permissions") from exc


def _load_run(out_dir: str | Path) -> _Run:
    path = Path(out_dir)
    if not path.exists():
        raise InputError(f"run folder {path} does not exist; {_HOW_TO_MAKE_A_RUN}")
    if not path.is_dir():
        raise InputError(f"{path} is a file, not a run folder; {_HOW_TO_MAKE_A_RUN}")
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"{path} is not a camanim run folder (no manifest.json); {_HOW_TO_MAKE_A_RUN}")
    manifest = _read_json(manifest_path, "re-run `camanim run` to write it again")
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    if not isinstance(layers, list) or not layers or not all(isinstance(layer, dict) for layer in layers):
        raise InputError(f"{manifest_path} has no 'layers' list; re-run `camanim run` to write it again")

    frame_spec = manifest.get("frames") if isinstance(manifest.get("frames"), dict) else {}
    count = frame_spec.get("count")
    if isinstance(count, int) and count != len(layers):
        raise InputError(
            f"{manifest_path} lists {len(layers)} layers but {count} frames; re-run `camanim run`"
        )
    norms = manifest.get("normalisations") or [key for key in frame_spec if key != "count"]
    frames: dict[str, list[Path]] = {}
    for norm in map(str, norms):
        folder = path / str(frame_spec.get(norm, f"frames/{norm}"))
        # Frames are named by position: frame i belongs to layers[i].
        paths = [folder / f"{i:04d}.png" for i in range(len(layers))]
        missing = next((p for p in paths if not p.is_file()), None)
        if missing is not None:
            raise InputError(
                f"{missing} is missing ({len(layers)} layers in {manifest_path.name}); "
                "the run is incomplete, re-run `camanim run`"
            )
        frames[norm] = paths
    if not frames:
        raise InputError(f"{path} has no frames (manifest lists no normalisations); re-run `camanim run` with --norm")

    ybroad = None
    ybroad_path = path / str(_get(manifest, "ybroad", "json", default="ybroad.json"))
    if ybroad_path.is_file():
        ybroad = _read_json(ybroad_path, "re-run `camanim road` to write it again")
        if not isinstance(ybroad, dict):
            raise InputError(f"{ybroad_path} is not a ybROAD result; re-run `camanim road {path}`")
    return _Run(path=path, manifest=manifest, layers=layers, frames=frames, ybroad=ybroad)


# --------------------------------------------------------------------------- #
# Small formatting helpers
# --------------------------------------------------------------------------- #


def _e(value: Any) -> str:
    """HTML-escape anything for text and attribute positions."""
    return html.escape(str(value), quote=True)


def _breakable(name: str) -> str:
    """Escaped layer name that wraps after dots (``features.denseblock3.denselayer11``), not mid-word."""
    # html.escape never emits ".", so inserting after each "." cannot split an entity.
    return _e(name).replace(".", ".<wbr>")


def _finite(value: Any) -> Any:
    """Replace NaN/inf (which JSON cannot carry) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _script_json(value: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``.

    Escaping ``<``, ``>`` and ``&`` as ``\\u00XX`` keeps ``</script>`` and
    ``<!--`` in layer names from ending the element early; the text still parses
    back to the exact names.
    """
    text = json.dumps(_finite(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text


def _json_tag(element_id: str, value: Any) -> str:
    return f'<script type="application/json" id="{_e(element_id)}">{_script_json(value)}</script>'


def _fmt_shape(shape: Any) -> str:
    return "×".join(map(str, shape)) if isinstance(shape, (list, tuple)) and shape else "—"


def _fmt_int(value: Any) -> str:
    return f"{int(value):,}" if isinstance(value, (int, float)) and math.isfinite(value) else "—"


def _fmt_ms(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "—"
    ms = seconds * 1000
    return f"{ms:.2f}" if ms < 100 else f"{ms:,.0f}"


def _fmt_number(value: float) -> str:
    """Compact axis label: 1k, 2.5M, 0.001."""
    if value == 0:
        return "0"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:.3g}"


def _numbers(layers: list[dict[str, Any]], key: str) -> list[float | None]:
    out: list[float | None] = []
    for layer in layers:
        value = layer.get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        out.append(float(value) if ok else None)
    return out


# --------------------------------------------------------------------------- #
# Frames as data URIs
# --------------------------------------------------------------------------- #


def _frame_format() -> tuple[str, str, dict[str, Any]]:
    if features.check("webp"):
        return "WEBP", "image/webp", _WEBP_OPTIONS
    return "JPEG", "image/jpeg", _JPEG_OPTIONS


def _data_uri(path: Path) -> str:
    fmt, mime, options = _frame_format()
    with Image.open(path) as img:
        buffer = io.BytesIO()
        img.convert("RGB").save(buffer, fmt, **options)
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _encode_frames(paths: Sequence[Path]) -> list[str]:
    # Pillow releases the GIL while encoding, so threads use every core.
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        return list(pool.map(_data_uri, paths))


# --------------------------------------------------------------------------- #
# Inline SVG charts
# --------------------------------------------------------------------------- #

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
        f'<svg class="cam-chart" id="{_e(element_id)}" viewBox="0 0 {_W} {_H}" role="img" '
        f'aria-label="{_e(title)}" data-n="{frame.n}" data-x0="{frame.x0:.3f}" data-dx="{frame.dx:.5f}">'
    ]


def _svg_axes(frame: _XScale, y_ticks: list[tuple[float, str]], x_label: str = "layer") -> list[str]:
    bottom = _H - _BOTTOM
    parts = []
    for y, label in y_ticks:
        parts.append(f'<line class="cam-grid" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text x="{_LEFT - 6}" y="{y + 3.5:.1f}" text-anchor="end">{_e(label)}</text>')
    parts.append(f'<path class="cam-axis" d="M{_LEFT},{_TOP} V{bottom} H{_W - _RIGHT}"/>')
    for i in _x_ticks(frame.n):
        x = frame.x(i)
        parts.append(f'<line class="cam-axis" x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}"/>')
        parts.append(f'<text x="{x:.1f}" y="{bottom + 15}" text-anchor="middle">{i}</text>')
    parts.append(f'<text x="{_W - _RIGHT}" y="{_H - 2}" text-anchor="end">{_e(x_label)}</text>')
    return parts


def _svg_hit_and_cursor(frame: _XScale) -> list[str]:
    # The transparent rect takes clicks anywhere in the plot (nearest layer);
    # it comes first so points drawn later still receive their own clicks.
    bottom = _H - _BOTTOM
    return [
        f'<rect class="cam-hit" x="{_LEFT}" y="{_TOP}" width="{_W - _LEFT - _RIGHT}" height="{bottom - _TOP}"/>',
        f'<line class="cam-cursor" x1="{frame.x0:.2f}" x2="{frame.x0:.2f}" y1="{_TOP - 4}" y2="{bottom}"/>',
    ]


def _bar_chart(element_id: str, layers: list[dict[str, Any]], values: list[float | None], *,
               log: bool, unit: str, css: str, title: str) -> str:
    frame = _XScale(len(layers))
    bottom, height = _H - _BOTTOM, _H - _BOTTOM - _TOP
    finite = [v for v in values if v is not None and v > 0]
    vmax = max(finite, default=0.0)
    if log:
        top_decade = max(1, math.ceil(math.log10(vmax))) if vmax >= 1 else 1
        stride = max(1, math.ceil(top_decade / 5))
        ticks = [(bottom - d / top_decade * height, _fmt_number(10.0**d)) for d in range(0, top_decade + 1, stride)]

        def y_of(v: float) -> float:
            return bottom - (math.log10(v) / top_decade * height if v >= 1 else 0.0)
    else:
        step = _nice_step(vmax or 1.0)
        top_value = step * math.ceil((vmax or 1.0) / step)
        ticks = [(bottom - k * step / top_value * height, _fmt_number(k * step))
                 for k in range(round(top_value / step) + 1)]

        def y_of(v: float) -> float:
            return bottom - v / top_value * height

    parts = _svg_open(element_id, frame, title) + _svg_axes(frame, ticks) + _svg_hit_and_cursor(frame)
    width = max(frame.dx * (0.8 if frame.dx > 3 else 1.0), 0.6)
    for i, (layer, value) in enumerate(zip(layers, values, strict=True)):
        if value is None or value <= 0 or (log and value < 1):
            continue
        y = y_of(value)
        label = f"{i} {layer.get('name', '')}: {_fmt_int(value) if log else f'{value:.3g}'} {unit}"
        parts.append(
            f'<rect class="cam-bar {css}" data-index="{i}" x="{frame.x(i) - width / 2:.2f}" y="{y:.2f}" '
            f'width="{width:.2f}" height="{bottom - y:.2f}"><title>{_e(label)}</title></rect>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _ybroad_series(run: _Run) -> dict[str, Any] | None:
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
    best_index = _get(run.ybroad, "ybroad_max", "index")
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


def _ybroad_chart(element_id: str, layers: list[dict[str, Any]], series: dict[str, Any]) -> str:
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
            f'r="{radius}"><title>{_e(label)}</title></circle>'
        )
    # The best layer is drawn last so it sits on top of its neighbours.
    bx, by = frame.x(best), y_of(values[best])
    label = f"best: {best} {layers[best].get('name', '')} ({values[best]:.4g})"
    parts.append(
        f'<circle class="cam-yb-point cam-best" data-index="{best}" cx="{bx:.2f}" cy="{by:.2f}" '
        f'r="{radius + 2.6:.1f}"><title>{_e(label)}</title></circle>'
    )
    # Label on the side with more room, cut to fit (about 6.6 units per bold character).
    room_right, room_left = _W - _RIGHT - bx - 8, bx - _LEFT - 8
    anchor, x_text, room = ("start", bx + 8, room_right) if room_right >= room_left else ("end", bx - 8, room_left)
    max_chars = max(8, int(room / 6.6))
    short = label if len(label) <= max_chars else label[: max_chars - 1] + "…"
    parts.append(
        f'<text class="cam-best-label" x="{x_text:.1f}" y="{max(by - 7, _TOP + 4):.1f}" '
        f'text-anchor="{anchor}">{_e(short)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- #
# The report page
# --------------------------------------------------------------------------- #

_NORM_NOTES = {
    "local": "each layer scaled on its own",
    "global": "one scale for the whole network",
}


def _prefix(inline: bool) -> str:
    return f"camanim-{secrets.token_hex(4)}-" if inline else ""


def _facts(run: _Run, series: dict[str, Any] | None) -> str:
    m = run.manifest
    items: list[tuple[str, str]] = []
    weights = _get(m, "model", "weights")
    items.append(("Model", _e(run.model_name) + (f' <span class="cam-sub">{_e(weights)}</span>' if weights else "")))
    source = _get(m, "image", "source", default="?")
    size = _get(m, "image", "size")
    size_text = f' <span class="cam-sub">{_e(_fmt_shape(size))}</span>' if size else ""
    items.append(("Image", _e(source) + size_text))
    items.append(("Method", _e(run.method)))
    target = m.get("target") if isinstance(m.get("target"), dict) else {}
    if target:
        label = target.get("label")
        index = target.get("index")
        score = target.get("score")
        text = _e(label if label is not None else f"class {index}")
        sub = []
        if index is not None:
            sub.append(f"#{_e(index)}")
        if isinstance(score, (int, float)) and math.isfinite(score):
            sub.append(f"{score * 100:.1f}%" if 0 <= score <= 1 else f"{score:.4g}")
        if sub:
            text += f' <span class="cam-sub">{" · ".join(sub)}</span>'
        items.append(("Target", text))
    items.append(("Layers", f"{len(run.layers):,}"))
    if series is not None:
        best = series["best"]
        mean = series["mean"]
        mean_text = f' <span class="cam-sub">mean {mean:.3g}</span>' if isinstance(mean, (int, float)) else ""
        items.append((
            "ybROAD max",
            f'<button type="button" class="cam-link cam-jump" data-index="{best}" '
            f'title="show this layer">{series["values"][best]:.3g} @ {best}</button>{mean_text}',
        ))
    return "".join(f"<div><dt>{label}</dt><dd>{value}</dd></div>" for label, value in items)


def _layer_table(run: _Run, series: dict[str, Any] | None, prefix: str) -> str:
    head = [("#", True), ("Layer", False), ("Type", False), ("Output", False), ("Params", True), ("ms", True)]
    if series is not None:
        head.append(("ybROAD", True))
    parts = [
        f'<div class="cam-table-wrap" id="{prefix}table-wrap"><table id="{prefix}layer-table"><thead><tr>',
        *(f'<th class="cam-num">{h}</th>' if num else f"<th>{h}</th>" for h, num in head),
        "</tr></thead><tbody>",
    ]
    for i, layer in enumerate(run.layers):
        name = str(layer.get("name", ""))
        module = layer.get("module")
        title = f' title="module: {_e(module)}"' if module and module != name else ""
        # Flags sit under the name rather than in a column of their own: most
        # rows have none, and the name needs the width.
        flags = []
        if layer.get("non_spatial"):
            flags.append('<span class="cam-flag" title="the CAM has no spatial extent here">non-spatial</span>')
        same_as = layer.get("same_as")
        if isinstance(same_as, int):
            flags.append(f'<span class="cam-flag" title="same output tensor as layer {same_as}, so the same CAM">'
                         f"same CAM as {same_as}</span>")
        if series is not None:
            value = series["values"][i]
            if i == series["best"]:
                flags.append('<span class="cam-flag cam-flag-best">★ best ybROAD</span>')
            elif value is None and not layer.get("non_spatial"):
                flags.append('<span class="cam-flag">no ybROAD</span>')
        flag_html = f'<div class="cam-flags">{"".join(flags)}</div>' if flags else ""
        layout = layer.get("layout")
        layout_html = f' <span class="cam-layout">{_e(layout)}</span>' if layout else ""
        cells = [
            f'<td class="cam-num">{i}</td>',
            f'<td class="cam-name"{title}><code>{_breakable(name)}</code>{flag_html}</td>',
            f'<td>{_e(layer.get("type", ""))}</td>',
            f'<td class="cam-dim">{_e(_fmt_shape(layer.get("shape")))}{layout_html}</td>',
            f'<td class="cam-num">{_fmt_int(layer.get("params"))}</td>',
            f'<td class="cam-num">{_fmt_ms(layer.get("seconds"))}</td>',
        ]
        if series is not None:
            value = series["values"][i]
            # Significant digits, not decimals: probability-scale scores are often below 0.001.
            cells.append(f'<td class="cam-num">{"—" if value is None else f"{value:.3g}"}</td>')
        parts.append(f'<tr data-index="{i}">{"".join(cells)}</tr>')
    parts.append("</tbody></table></div>")
    return "".join(parts)


def _video_links(run: _Run) -> str:
    videos = run.manifest.get("videos") if isinstance(run.manifest.get("videos"), dict) else {}
    links = [
        f'<a href="{_e(Path(str(rel)).as_posix())}">{_e(kind.replace("_", " "))}</a>'
        for kind, rel in videos.items()
        if isinstance(rel, str) and (run.path / rel).is_file()
    ]
    return f" · videos: {' · '.join(links)}" if links else ""


def _render_report(run: _Run, *, inline: bool) -> str:
    prefix = _prefix(inline)
    series = _ybroad_series(run)
    norms = list(run.frames)
    frames = {norm: _encode_frames(paths) for norm, paths in run.frames.items()}
    data = {
        "inline": inline,
        "model": run.manifest.get("model"),
        "image": run.manifest.get("image"),
        "method": run.manifest.get("method"),
        "target": run.manifest.get("target"),
        "norms": norms,
        "fps": run.fps,
        "layers": run.layers,
        "ybroad": series,
    }

    figures = "".join(
        f'<figure><img id="{prefix}frame-{_e(norm)}" alt="{_e(norm)} CAM of the current layer">'
        f"<figcaption><b>{_e(norm)}</b> · {_e(_NORM_NOTES.get(norm, 'normalisation'))}</figcaption></figure>"
        for norm in norms
    )
    viewer = (
        f'<div class="cam-stage"><div class="cam-frames" style="--cam-cols: {len(norms)}">{figures}</div>'
        '<div class="cam-controls">'
        f'<button type="button" class="cam-button" id="{prefix}play" aria-pressed="false">▶ Play</button>'
        f'<input type="range" id="{prefix}layer-slider" min="0" max="{len(run.layers) - 1}" step="1" value="0" '
        'aria-label="layer"></div>'
        f'<div class="cam-caption" id="{prefix}layer-caption" aria-live="polite">'
        f'<span class="cam-cap-index" id="{prefix}caption-index"></span>'
        f'<code class="cam-cap-name" id="{prefix}caption-name"></code>'
        f'<span class="cam-cap-meta" id="{prefix}caption-meta"></span></div></div>'
    )
    if series is not None:
        # Describe only what ybroad.json states; how ROAD is combined is road.py's business.
        facts = ["ROAD score per layer, higher is more faithful"]
        if series.get("percentiles"):
            meaning = series.get("percent_meaning") or "pixels removed"
            facts.append(f"{', '.join(map(str, series['percentiles']))}% {meaning}")
        if series.get("score"):
            facts.append(f"score: {series['score']}")
        trials = series.get("trials")
        if isinstance(trials, int) and trials > 1:
            facts.append(f"{trials} trials, band ± 1 std")
        note = _e("; ".join(facts)) + ". Click to jump to a layer; the larger dot is the best layer."
        viewer += (
            f'<div class="cam-card"><h2>ybROAD</h2><p class="cam-note">{note}</p>'
            f"{_ybroad_chart(prefix + 'ybroad-plot', run.layers, series)}</div>"
        )

    params = _numbers(run.layers, "params")
    ms = [None if s is None else s * 1000 for s in _numbers(run.layers, "seconds")]
    zero = sum(1 for p in params if not p)
    side = (
        '<div class="cam-card"><h2>Parameters per layer</h2>'
        f'<p class="cam-note">Log scale; {zero} of {len(params)} layers hold no parameters of their own.</p>'
        + _bar_chart(prefix + "params-plot", run.layers, params, log=True, unit="params",
                     css="cam-bar-params", title="parameters per layer")
        + "</div>"
        '<div class="cam-card"><h2>Time per layer</h2>'
        '<p class="cam-note">Milliseconds per layer, as recorded in the run.</p>'
        + _bar_chart(prefix + "time-plot", run.layers, ms, log=False, unit="ms",
                     css="cam-bar-time", title="milliseconds per layer")
        + "</div>"
        f'<div class="cam-card"><h2>Layers</h2><p class="cam-note">Execution order; click a row to show it.</p>'
        f"{_layer_table(run, series, prefix)}</div>"
    )
    versions = run.manifest.get("versions") if isinstance(run.manifest.get("versions"), dict) else {}
    version_text = ", ".join(f"{_e(k)} {_e(v)}" for k, v in versions.items())
    footer = (
        '<footer class="cam-footer">Keys: ← → step, Home / End, space plays. '
        f"{('Made with ' + version_text + '.') if version_text else ''}"
        f"{'' if inline else _video_links(run)}</footer>"
    )
    root_class = "camanim-report cam-inline" if inline else "camanim-report"
    body = (
        f'<div class="{root_class}" id="{prefix}root" tabindex="-1">'
        '<header class="cam-header"><div><div class="cam-brand">CAManim report</div>'
        f'<h1 class="cam-title">{_e(run.model_name)} · {_e(run.method)}</h1></div>'
        f'<dl class="cam-facts">{_facts(run, series)}</dl></header>'
        f'<div class="cam-main"><section class="cam-viewer">{viewer}</section>'
        f'<section class="cam-side">{side}</section></div>{footer}'
        + _json_tag(prefix + "report-data", data)
        + "".join(_json_tag(f"{prefix}frames-data-{norm}", frames[norm]) for norm in norms)
        + f"<script>{REPORT_JS.replace('__PREFIX__', json.dumps(prefix))}</script></div>"
    )
    if inline:
        return f"<style>{STYLE}</style>{body}"
    title = f"CAManim · {run.model_name} · {run.method}"
    return _page(title, body)


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{PAGE_STYLE}{STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )


# --------------------------------------------------------------------------- #
# PNG plots
# --------------------------------------------------------------------------- #


def _layer_axis(ax: Any, layers: list[dict[str, Any]], max_labels: int = 36) -> None:
    """Thinned, rotated layer names: every layer cannot be labelled in DenseNet161."""
    n = len(layers)
    ticks = sorted(set(np.linspace(0, n - 1, min(n, max_labels)).round().astype(int).tolist()))
    labels = []
    for i in ticks:
        name = str(layers[i].get("name", ""))
        # The tail tells deep names apart ("...denselayer12.conv2"); their heads are all alike.
        labels.append(f"{i} {name if len(name) <= 28 else '…' + name[-27:]}")
    ax.set_xticks(ticks)
    # parse_math off: a layer name with "$" must stay text, not become mathtext.
    ax.set_xticklabels(labels, rotation=60, ha="right", rotation_mode="anchor", fontsize=7, parse_math=False)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_xlabel("layer (execution order)")


def _plot_bars(run: _Run, path: Path, values: list[float | None], *, log: bool, ylabel: str,
               title: str, color: str) -> None:
    from matplotlib import rc_context
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    with rc_context({"font.size": 9}):
        fig = Figure(figsize=(12, 5), dpi=120, layout="constrained")
        ax = fig.add_subplot()
        heights = np.array([np.nan if v is None else v for v in values], dtype=float)
        x = np.arange(len(values))
        if log:
            heights[heights < 1] = np.nan
        has_bars = bool(np.isfinite(heights).any())
        # Bars of a log chart start at 1 (10^0), as in the report's SVG chart.
        ax.bar(x, heights - 1 if log else heights, bottom=1 if log else 0,
               width=0.85 if len(values) < 150 else 1.0, color=color, linewidth=0)
        if log and has_bars:
            ax.set_yscale("log")
            ax.set_ylim(bottom=1, top=10.0 ** max(1, math.ceil(math.log10(float(np.nanmax(heights))))))
            ax.yaxis.set_major_locator(LogLocator(base=10))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _fmt_number(v)))
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel(ylabel)
        ax.set_title(title, loc="left", fontsize=11, parse_math=False)
        ax.grid(axis="y", color="#e5e7eb", linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        _layer_axis(ax, run.layers)
        with _atomic(path) as tmp:
            fig.savefig(tmp, format="png")


def _write_plots(run: _Run) -> tuple[Path, Path]:
    params = _numbers(run.layers, "params")
    zero = sum(1 for p in params if not p)
    params_path = run.path / PARAMS_PLOT_NAME
    _plot_bars(
        run, params_path, params, log=True, ylabel="parameters (log scale)", color="#4c72b0",
        title=f"{run.model_name}: parameters per layer ({zero} of {len(params)} layers without parameters not drawn)",
    )
    ms = [None if s is None else s * 1000 for s in _numbers(run.layers, "seconds")]
    total = sum(v for v in ms if v is not None)
    time_path = run.path / TIME_PLOT_NAME
    _plot_bars(
        run, time_path, ms, log=False, ylabel="milliseconds", color="#55a868",
        title=f"{run.model_name} · {run.method}: time per layer (sum {total:,.1f} ms)",
    )
    return params_path, time_path


# --------------------------------------------------------------------------- #
# Writing files
# --------------------------------------------------------------------------- #


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` and move it into place only on success.

    A crash never leaves a half-written report or video behind. The suffix is
    kept so tools that pick a format by extension (ffmpeg) still work. The file
    is created by whoever writes it, as a plain ``open()`` would, so it gets the
    umask's permissions (``mkstemp`` would make it private, 0600).
    """
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(6)}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_text(path: Path, text: str) -> None:
    with _atomic(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- #
# Public API: one run
# --------------------------------------------------------------------------- #


def report_html(out_dir: str | Path, *, inline: bool = False) -> str:
    """Return the HTML report of a finished run as a string.

    Args:
        out_dir: run folder (holds ``manifest.json`` and ``frames/``).
        inline: return a fragment for a notebook (``_repr_html_``) instead of a
            page: no ``<html>``/``<body>``, styles scoped to the fragment, and
            every id prefixed uniquely so several reports can share a notebook.

    Raises:
        ValueError: ``out_dir`` is not a complete run folder; the message names
            the folder or file and what to do.
    """
    return _render_report(_load_run(out_dir), inline=inline)


def build_report(out_dir: str | Path) -> Path:
    """Write ``report.html``, ``layer_params.png`` and ``layer_time.png`` into a run folder.

    The report is a single offline HTML file: a layer slider over the local and
    global CAM frames (play, arrow keys), the layer table, the ybROAD curve when
    ``ybroad.json`` exists, and per-layer parameter count and time charts (the
    paper's computational-complexity figure).

    Args:
        out_dir: run folder written by ``camanim run``.

    Returns:
        Path of ``report.html``.

    Raises:
        ValueError: ``out_dir`` is not a complete run folder.
    """
    run = _load_run(out_dir)
    page = _render_report(run, inline=False)
    _write_plots(run)
    path = run.path / REPORT_NAME
    _write_text(path, page)
    logger.debug("wrote %s (%.1f MB)", path, len(page.encode("utf-8")) / 1e6)
    return path


# --------------------------------------------------------------------------- #
# Public API: several runs
# --------------------------------------------------------------------------- #


def align_by_depth(layer_counts: Sequence[int], steps: int | None = None) -> list[list[int]]:
    """Frame index per run and step when runs of different depth play together.

    Step ``s`` of ``steps`` is relative depth ``t = s / (steps - 1)`` (0 for a
    single step); run ``r`` with ``L_r`` layers shows layer ``round(t * (L_r - 1))``,
    rounding halves up. Integer arithmetic keeps the result exact, so the page,
    the video and the tests agree.

    Args:
        layer_counts: number of layers of each run.
        steps: number of steps; defaults to the largest layer count.

    Returns:
        ``mapping[r][s]``, the layer of run ``r`` shown at step ``s``.
    """
    counts = [int(c) for c in layer_counts]
    if not counts or min(counts) < 1:
        raise ValueError(f"every run needs at least one layer, got layer counts {counts}")
    steps = max(counts) if steps is None else int(steps)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if steps == 1:
        return [[0] for _ in counts]
    denom = steps - 1
    # round half up of s * (L - 1) / denom == floor((2 * s * (L - 1) + denom) / (2 * denom))
    return [[(2 * s * (count - 1) + denom) // (2 * denom) for s in range(steps)] for count in counts]


def _run_title(run: _Run) -> str:
    return f"{run.model_name} · {run.method}"


def _run_subtitle(run: _Run) -> str:
    target = run.manifest.get("target") if isinstance(run.manifest.get("target"), dict) else {}
    parts = []
    label = target.get("label", target.get("index"))
    if label is not None:
        parts.append(str(label))
    score = target.get("score")
    if isinstance(score, (int, float)) and math.isfinite(score):
        parts.append(f"{score * 100:.1f}%" if 0 <= score <= 1 else f"{score:.4g}")
    parts.append(f"{len(run.layers)} layers")
    source = _get(run.manifest, "image", "source")
    if source:
        parts.append(str(source))
    return " · ".join(parts)


def _compare_norms(runs: Sequence[_Run]) -> list[str]:
    common = [norm for norm in runs[0].frames if all(norm in run.frames for run in runs)]
    if not common:
        names = ", ".join(str(run.path) for run in runs)
        raise InputError(f"runs {names} share no normalisation; re-run them with the same --norm")
    return common


def _render_compare(runs: Sequence[_Run], mapping: list[list[int]], norms: list[str], fps: int) -> str:
    prefix = ""
    steps = len(mapping[0])
    data = {
        "inline": False,
        "steps": steps,
        "fps": fps,
        "norms": norms,
        "mapping": mapping,
        "runs": [
            {
                "title": _run_title(run),
                "path": str(run.path),
                "model": run.manifest.get("model"),
                "method": run.manifest.get("method"),
                "target": run.manifest.get("target"),
                "layers": [{"index": layer.get("index", i), "name": layer.get("name"), "type": layer.get("type")}
                           for i, layer in enumerate(run.layers)],
            }
            for run in runs
        ],
    }
    toggle = ""
    if len(norms) > 1:
        toggle = '<div class="cam-toggle" role="group" aria-label="normalisation">' + "".join(
            f'<button type="button" id="{prefix}norm-{_e(norm)}" aria-pressed="false">{_e(norm)}</button>'
            for norm in norms
        ) + "</div>"
    columns = "".join(
        f'<div class="cam-col"><h2>{_e(_run_title(run))}</h2>'
        f'<div class="cam-col-sub">{_e(_run_subtitle(run))}</div>'
        f'<img id="{prefix}frame-{r}" alt="CAM of {_e(_run_title(run))} at the current depth">'
        f'<div class="cam-caption" id="{prefix}caption-{r}">'
        f'<span class="cam-cap-index" id="{prefix}caption-index-{r}"></span>'
        f'<code class="cam-cap-name" id="{prefix}caption-name-{r}"></code>'
        f'<span class="cam-cap-meta" id="{prefix}caption-meta-{r}"></span></div></div>'
        for r, run in enumerate(runs)
    )
    counts = ", ".join(str(len(run.layers)) for run in runs)
    body = (
        f'<div class="camanim-report" id="{prefix}root" tabindex="-1">'
        '<header class="cam-header"><div><div class="cam-brand">CAManim comparison</div>'
        f'<h1 class="cam-title">{len(runs)} runs in lock-step</h1></div>'
        '<dl class="cam-facts"><div><dt>Alignment</dt><dd>by relative depth '
        f'<span class="cam-sub">layers per run: {_e(counts)}</span></dd></div></dl></header>'
        '<div class="cam-compare"><div class="cam-compare-controls">'
        f'<button type="button" class="cam-button" id="{prefix}play" aria-pressed="false">▶ Play</button>'
        f'<input type="range" id="{prefix}depth-slider" min="0" max="{steps - 1}" step="1" value="0" '
        'aria-label="relative depth">'
        f'<span class="cam-counter" id="{prefix}depth-readout"></span>{toggle}</div>'
        '<p class="cam-note" style="margin:0;color:var(--cam-muted);font-size:12px">'
        "Runs with different numbers of layers are aligned by relative depth: at depth t (0 = first layer, "
        "1 = last layer) a run with L layers shows its layer round(t · (L − 1)), so shorter runs repeat "
        "layers. Keys: ← → step, Home / End, space plays.</p>"
        f'<div class="cam-cols">{columns}</div></div>'
        + _json_tag(prefix + "compare-data", data)
        + "".join(
            _json_tag(f"{prefix}frames-data-{r}-{norm}", _encode_frames(run.frames[norm]))
            for r, run in enumerate(runs)
            for norm in norms
        )
        + f"<script>{COMPARE_JS.replace('__PREFIX__', json.dumps(prefix))}</script></div>"
    )
    return _page(f"CAManim comparison · {len(runs)} runs", body)


def _even(value: int) -> int:
    return value + (value % 2)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _write_grid_video(runs: Sequence[_Run], mapping: list[list[int]], norm: str, path: Path, fps: int) -> None:
    import imageio_ffmpeg

    sizes = []
    for run in runs:
        with Image.open(run.frames[norm][0]) as img:
            sizes.append(img.size)
    # libx264 with yuv420p needs even dimensions; every block below is even.
    tile_w = _even(max(w for w, _ in sizes))
    tile_h = _even(max(h for _, h in sizes))
    strip, gutter = 24, 4
    width = len(runs) * tile_w + (len(runs) - 1) * gutter
    height = strip + tile_h + strip
    font = _font(13)

    base = Image.new("RGB", (width, height), (18, 21, 25))
    draw = ImageDraw.Draw(base)
    for r, run in enumerate(runs):
        draw.text((r * (tile_w + gutter) + 4, 5), _fit(draw, _run_title(run), font, tile_w - 8),
                  fill=(255, 255, 255), font=font)

    # Mapping is monotone, so a shorter run shows the same layer on consecutive
    # steps: keep its last column instead of decoding the PNG again.
    last: dict[int, tuple[int, Image.Image]] = {}

    def column(r: int, i: int) -> Image.Image:
        if r in last and last[r][0] == i:
            return last[r][1]
        run = runs[r]
        col = Image.new("RGB", (tile_w, tile_h + strip), (18, 21, 25))
        with Image.open(run.frames[norm][i]) as img:
            tile = ImageOps.contain(img.convert("RGB"), (tile_w, tile_h))
        col.paste(tile, ((tile_w - tile.width) // 2, (tile_h - tile.height) // 2))
        col_draw = ImageDraw.Draw(col)
        caption = f"{i}: {run.layers[i].get('name', '')}"
        col_draw.text((4, tile_h + 5), _fit(col_draw, caption, font, tile_w - 8), fill=(243, 198, 75), font=font)
        last[r] = (i, col)
        return col

    def compose(step: int) -> np.ndarray:
        canvas = base.copy()
        for r in range(len(runs)):
            canvas.paste(column(r, mapping[r][step]), (r * (tile_w + gutter), strip))
        return np.ascontiguousarray(np.asarray(canvas, dtype=np.uint8))

    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=1,
    )
    writer.send(None)
    steps = len(mapping[0])
    # One worker decodes and composes the next frame while ffmpeg encodes this one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            pending = pool.submit(compose, 0)
            for step in range(steps):
                frame = pending.result()
                if step + 1 < steps:
                    pending = pool.submit(compose, step + 1)
                writer.send(frame)
        finally:
            writer.close()


def compare(run_dirs: Sequence[str | Path], out_dir: str | Path, *, fps: int = 10) -> dict[str, Path]:
    """Play several runs side by side: ``compare.html`` and ``compare_grid.mp4``.

    One column per run (the paper's "one model, all CAMs" and "one CAM, several
    models" figures) under one slider over relative depth. Runs with different
    numbers of layers are aligned by relative depth, see :func:`align_by_depth`;
    the page says so. The video tiles each run's local frames side by side, one
    video frame per step, as many steps as the deepest run has layers.

    Args:
        run_dirs: run folders written by ``camanim run``.
        out_dir: folder for the two outputs (created if needed).
        fps: frames per second of the video and of the page's playback.

    Returns:
        ``{"html": .../compare.html, "video": .../compare_grid.mp4}``.

    Raises:
        ValueError: no runs, a folder that is not a complete run, or runs
            without a normalisation in common. Nothing is written then.
    """
    if isinstance(run_dirs, (str, Path)):
        raise TypeError("run_dirs must be a sequence of run folders, not a single path")
    if not isinstance(fps, int) or isinstance(fps, bool) or fps < 1:
        raise InputError(f"fps must be a positive integer, got {fps!r}")
    if not run_dirs:
        raise InputError("compare needs at least one run folder; pass the --out folders of finished runs")
    runs = [_load_run(run_dir) for run_dir in run_dirs]
    norms = _compare_norms(runs)
    mapping = align_by_depth([len(run.layers) for run in runs])
    page = _render_compare(runs, mapping, norms, fps)

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output folder {out} ({exc.strerror}); choose another --out") from exc
    html_path = out / COMPARE_NAME
    video_path = out / COMPARE_VIDEO_NAME
    video_norm = "local" if "local" in norms else norms[0]
    with _atomic(video_path) as tmp:
        _write_grid_video(runs, mapping, video_norm, tmp, fps)
    _write_text(html_path, page)
    return {"html": html_path, "video": video_path}
