"""``report.html``: one self-contained, offline page per run (viewer, ybROAD curve, layer table, charts)."""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

from ..rundir import RunView, load_run, names, write_text
from .charts import bar_chart, road_curves_chart, ybroad_chart, ybroad_series
from .html import (
    breakable,
    encode_frames,
    esc,
    fmt_int,
    fmt_ms,
    fmt_shape,
    get_in,
    id_prefix,
    json_tag,
    numbers,
    page,
)
from .plots import write_plots
from .template import REPORT_JS, STYLE

logger = logging.getLogger(__name__)

_NORM_NOTES = {
    "local": "each layer scaled on its own",
    "global": "one scale for the whole network",
}


def _dicom_facts(image: Any) -> str:
    """Modality, window and pixel spacing of a DICOM image (the manifest's de-identified fields), or ''."""
    if not isinstance(image, dict) or not str(image.get("format", "")).startswith("DICOM"):
        return ""
    parts = [esc(image.get("modality") or "modality not given")]
    window = image.get("window")
    if isinstance(window, dict):
        unit = get_in(image, "rescale", "unit") or ""
        parts.append(f"window {window.get('centre'):g}/{window.get('width'):g}{' ' + esc(unit) if unit else ''} "
                     f'<span class="cam-sub">centre/width, {esc(window.get("source"))}</span>')
    spacing = image.get("pixel_spacing_mm")
    if isinstance(spacing, list) and len(spacing) == 2:
        parts.append(f"pixel {spacing[0]:g} × {spacing[1]:g} mm")
    if image.get("inverted"):
        parts.append("MONOCHROME1, shown inverted")
    if (image.get("frames") or 1) > 1:
        parts.append(f"frame {image.get('frame')} of 0..{image.get('frames') - 1}")
    return " · ".join(parts)


def _facts(run: RunView, series: dict[str, Any] | None) -> str:
    m = run.manifest
    items: list[tuple[str, str]] = []
    weights = get_in(m, "model", "weights")
    items.append(("Model", esc(run.model_name) + (f' <span class="cam-sub">{esc(weights)}</span>' if weights else "")))
    source = get_in(m, "image", "source", default="?")
    size = get_in(m, "image", "size")
    size_text = f' <span class="cam-sub">{esc(fmt_shape(size))}</span>' if size else ""
    items.append(("Image", esc(source) + size_text))
    dicom = _dicom_facts(m.get("image"))
    if dicom:
        items.append(("DICOM", dicom))
    items.append(("Method", esc(run.method)))
    target = m.get("target") if isinstance(m.get("target"), dict) else {}
    if target:
        label = target.get("label")
        index = target.get("index")
        score = target.get("score")
        text = esc(label if label is not None else f"class {index}")
        sub = []
        if index is not None:
            sub.append(f"#{esc(index)}")
        if isinstance(score, (int, float)) and math.isfinite(score) and target.get("kind") == "value":
            sub.append(f"value {score:.4g}")  # a target on the model's output: its value, not a probability
        elif isinstance(score, (int, float)) and math.isfinite(score):
            sub.append(f"{score * 100:.1f}%" if 0 <= score <= 1 else f"{score:.4g}")
            probability = get_in(m, "options", "probability")  # softmax or sigmoid
            if probability:
                sub.append(esc(probability))
        if sub:
            text += f' <span class="cam-sub">{" · ".join(sub)}</span>'
        items.append(("Target", text))
    items.append(("Layers", f"{len(run.layers):,}"))
    if series is not None:
        best = series["best"]
        mean = series["mean"]
        mean_text = f' <span class="cam-sub">mean {mean:.3g}</span>' if isinstance(mean, (int, float)) else ""
        low, high = series["low"][best], series["high"][best]
        ci = f" [{low:.3g}, {high:.3g}]" if low is not None and high is not None else ""
        jump = (f'<button type="button" class="cam-link cam-jump" data-index="{best}" '
                f'title="show this layer">{series["values"][best]:.3g}{ci} @ {best}</button>')
        if series["warnings"]:
            # No star for a pick that cannot be trusted: the warning, in words, takes its place.
            items.append(("ybROAD highest", jump + mean_text))
            items.append(("ybROAD warning", "".join(f'<span class="cam-warning-text">{esc(w)}</span>'
                                                    for w in series["warnings"])))
        else:
            items.append(("ybROAD best ★", jump + mean_text))
    return "".join(f"<div><dt>{label}</dt><dd>{value}</dd></div>" for label, value in items)


def _layer_table(run: RunView, series: dict[str, Any] | None, prefix: str) -> str:
    head = [("#", True), ("Layer", False), ("Type", False), ("Output", False), ("Params", True), ("ms", True)]
    if series is not None:
        head.append(("ybROAD", True))
    # Numeric columns sort on a click (the JS reads each cell's data-sort); the ybROAD column first descending.
    parts = [
        f'<div class="cam-table-wrap" id="{prefix}table-wrap"><table id="{prefix}layer-table"><thead><tr>',
        *(f'<th class="cam-num" data-col="{k}" aria-sort="none"><button type="button" class="cam-sort" '
          f'id="{prefix}sort-{h.lower()}" title="sort by {h}">{h}</button></th>' if num else f"<th>{h}</th>"
          for k, (h, num) in enumerate(head)),
        "</tr></thead><tbody>",
    ]
    warned = series is not None and bool(series["warnings"])
    aliases_of: dict[int, list[int]] = {}
    for j, layer in enumerate(run.layers):
        if isinstance(layer.get("same_as"), int):
            aliases_of.setdefault(layer["same_as"], []).append(j)
    for i, layer in enumerate(run.layers):
        name = str(layer.get("name", ""))
        module = layer.get("module")
        title = f' title="module: {esc(module)}"' if module and module != name else ""
        # Flags sit under the name rather than in a column of their own: most
        # rows have none, and the name needs the width.
        flags = []
        if layer.get("non_spatial"):
            flags.append('<span class="cam-flag" title="the CAM has no spatial extent here">non-spatial</span>')
        same_as = layer.get("same_as")
        if isinstance(same_as, int):
            flags.append(f'<span class="cam-flag" title="same output tensor as layer {same_as}, so the same CAM">'
                         f"same CAM as {same_as}</span>")
        if i in aliases_of:
            others = ", ".join(str(j) for j in aliases_of[i])
            flags.append(f'<span class="cam-flag" title="layers {esc(others)} pass on this very output">'
                         f"aliases: {esc(others)}</span>")
        note = series["notes"][i] if series is not None else None
        if note:
            flags.append(f'<span class="cam-flag cam-flag-note" title="what this pass-through layer carries">'
                         f"{esc(note)}</span>")
        if series is not None:
            value = series["values"][i]
            if i == series["best"] and warned:
                flags.append('<span class="cam-flag cam-flag-warn" title="see the ybROAD warning">'
                             "highest ybROAD, not trusted</span>")
            elif i == series["best"]:
                flags.append('<span class="cam-flag cam-flag-best">★ best ybROAD</span>')
            elif value is None and not layer.get("non_spatial"):
                flags.append('<span class="cam-flag">no ybROAD</span>')
        flag_html = f'<div class="cam-flags">{"".join(flags)}</div>' if flags else ""
        layout = layer.get("layout")
        layout_html = f' <span class="cam-layout">{esc(layout)}</span>' if layout else ""
        params, seconds = layer.get("params"), layer.get("seconds")
        cells = [
            f'<td class="cam-num" data-sort="{i}">{i}</td>',
            f'<td class="cam-name"{title}><code>{breakable(name)}</code>{flag_html}</td>',
            f'<td class="cam-type">{_camel_breakable(str(layer.get("type", "")))}</td>',
            f'<td class="cam-dim">{esc(fmt_shape(layer.get("shape")))}{layout_html}</td>',
            f'<td class="cam-num" data-sort="{_sort_key(params)}">{fmt_int(params)}</td>',
            f'<td class="cam-num" data-sort="{_sort_key(seconds)}">{fmt_ms(seconds)}</td>',
        ]
        if series is not None:
            cells.append(_ybroad_cell(series, i))
        parts.append(f'<tr data-index="{i}">{"".join(cells)}</tr>')
    parts.append("</tbody></table></div>")
    return "".join(parts)


def _camel_breakable(name: str) -> str:
    """An escaped type name that may wrap between its CamelCase words (``Depthwise<wbr>Separable<wbr>Conv``),
    never inside one: the layer table stays within its column at 1400 px."""
    return "<wbr>".join(esc(part) for part in re.split(r"(?<=[a-z0-9])(?=[A-Z])", name))


def _sort_key(value: Any) -> str:
    """A cell's ``data-sort``: the number, or empty (sorted last) when there is none."""
    return repr(float(value)) if isinstance(value, (int, float)) and math.isfinite(value) else ""


def _ybroad_cell(series: dict[str, Any], i: int) -> str:
    """The ybROAD cell: the value (significant digits: probability-scale scores are often below 0.001),
    its interval's half-width under it, and whether it is above the chance band (▲) or not (▽)."""
    value, low, high, above = series["values"][i], series["low"][i], series["high"][i], series["above"][i]
    if value is None:
        return '<td class="cam-num cam-yb" data-sort="">—</td>'
    mark = ""
    if above is True:
        mark = '<span class="cam-above" title="above the chance band (random pixel rankings)">▲</span>'
    elif above is False:
        mark = '<span class="cam-below" title="not above the chance band (random pixel rankings)">▽</span>'
    spread = (f'<div class="cam-pm" title="{esc(series["interval"])}: {low:.4g} to {high:.4g}">'
              f"±{(high - low) / 2:.2g}</div>") if low is not None and high is not None else ""
    return f'<td class="cam-num cam-yb" data-sort="{value!r}">{mark}{value:.3g}{spread}</td>'


def _ybroad_card(run: RunView, series: dict[str, Any], prefix: str) -> str:
    """The ybROAD card: what the chart shows, the statement on the best layer, the warnings, the chart of
    ROAD per layer and the chart of its two curves, MoRF and LeRF."""
    # Describe only what ybroad.json states; how ROAD is combined is road/metric.py's business.
    facts = ["ROAD score per layer, higher is more faithful"]
    if series.get("percentiles"):
        meaning = series.get("percent_meaning") or "pixels removed"
        facts.append(f"{', '.join(map(str, series['percentiles']))}% {meaning}")
    facts.append(f"y: {series['score_label']}")
    trials = series.get("trials")
    if isinstance(trials, int) and any(v is not None for v in series["low"]):
        facts.append(f"{trials} trials, band = {series['interval']}")
    if series.get("baseline") and series["baseline"].get("band"):
        facts.append("grey band = chance (random pixel rankings, 95% band); hollow points are not above it")
    note = esc("; ".join(facts)) + ". Click to jump to a layer; the larger dot is the best layer."
    text = ""
    if series.get("statement"):
        text += f'<p class="cam-statement">{esc(series["statement"][0].upper() + series["statement"][1:])}.</p>'
    text += "".join(f'<p class="cam-warning" role="alert">Warning: {esc(w)}.</p>' for w in series["warnings"])
    curves = road_curves_chart(prefix + "road-curves-plot", run.layers, series)
    curves_html = ("" if curves is None else
                   '<p class="cam-note">The two curves ROAD is made of: the change of the score when the most '
                   "(MoRF) or least (LeRF) relevant pixels are removed, mean over percentages; dashed: random "
                   f"rankings.</p>{curves}")
    return (f'<div class="cam-card"><h2>ybROAD</h2><p class="cam-note">{note}</p>{text}'
            f"{ybroad_chart(prefix + 'ybroad-plot', run.layers, series)}{curves_html}</div>")


def _video_links(run: RunView) -> str:
    videos = run.manifest.get("videos") if isinstance(run.manifest.get("videos"), dict) else {}
    links = [
        f'<a href="{esc(Path(str(rel)).as_posix())}">{esc(kind.replace("_", " "))}</a>'
        for kind, rel in videos.items()
        if isinstance(rel, str) and run.path is not None and (run.path / rel).is_file()
    ]
    return f" · videos: {' · '.join(links)}" if links else ""


def render_report(run: RunView, *, inline: bool) -> str:
    """The report of ``run`` (a folder or a result in memory) as an HTML page, or as a notebook fragment.

    ``inline``: a fragment for a notebook: no ``<html>``/``<body>``, styles scoped to the fragment,
    every id prefixed uniquely so several reports can share a notebook, and no video links.
    """
    prefix = id_prefix(inline)
    series = ybroad_series(run)
    norms = list(run.frames)
    frames = {norm: encode_frames(paths) for norm, paths in run.frames.items()}
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
        f'<figure><img id="{prefix}frame-{esc(norm)}" alt="{esc(norm)} CAM of the current layer">'
        f"<figcaption><b>{esc(norm)}</b> · {esc(_NORM_NOTES.get(norm, 'normalisation'))}</figcaption></figure>"
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
        viewer += _ybroad_card(run, series, prefix)

    params = numbers(run.layers, "params")
    ms = [None if s is None else s * 1000 for s in numbers(run.layers, "seconds")]
    zero = sum(1 for p in params if not p)
    side = (
        '<div class="cam-card"><h2>Parameters per layer</h2>'
        f'<p class="cam-note">Log scale; {zero} of {len(params)} layers hold no parameters of their own.</p>'
        + bar_chart(prefix + "params-plot", run.layers, params, log=True, unit="params",
                     css="cam-bar-params", title="parameters per layer")
        + "</div>"
        '<div class="cam-card"><h2>Time per layer</h2>'
        '<p class="cam-note">Milliseconds per layer, as recorded in the run.</p>'
        + bar_chart(prefix + "time-plot", run.layers, ms, log=False, unit="ms",
                     css="cam-bar-time", title="milliseconds per layer")
        + "</div>"
        f'<div class="cam-card"><h2>Layers</h2><p class="cam-note">Execution order; click a row to show it.</p>'
        f"{_layer_table(run, series, prefix)}</div>"
    )
    versions = run.manifest.get("versions") if isinstance(run.manifest.get("versions"), dict) else {}
    version_text = ", ".join(f"{esc(k)} {esc(v)}" for k, v in versions.items())
    footer = (
        '<footer class="cam-footer">Keys: ← → step, Home / End, space plays. '
        f"{('Made with ' + version_text + '.') if version_text else ''}"
        f"{'' if inline else _video_links(run)}</footer>"
    )
    root_class = "camanim-report cam-inline" if inline else "camanim-report"
    body = (
        f'<div class="{root_class}" id="{prefix}root" tabindex="-1">'
        '<header class="cam-header"><div><div class="cam-brand">CAManim report</div>'
        f'<h1 class="cam-title">{esc(run.model_name)} · {esc(run.method)}</h1></div>'
        f'<dl class="cam-facts">{_facts(run, series)}</dl></header>'
        f'<div class="cam-main"><section class="cam-viewer">{viewer}</section>'
        f'<section class="cam-side">{side}</section></div>{footer}'
        + json_tag(prefix + "report-data", data)
        + "".join(json_tag(f"{prefix}frames-data-{norm}", frames[norm]) for norm in norms)
        + f"<script>{REPORT_JS.replace('__PREFIX__', json.dumps(prefix))}</script></div>"
    )
    if inline:
        return f"<style>{STYLE}</style>{body}"
    title = f"CAManim · {run.model_name} · {run.method}"
    return page(title, body)


def report_html(out_dir: str | Path, *, inline: bool = False) -> str:
    """Return the HTML report of a finished run as a string.

    Args:
        out_dir: run folder (holds ``manifest.json`` and ``frames/``).
        inline: return a fragment for a notebook (``_repr_html_``) instead of a
            page: no ``<html>``/``<body>``, styles scoped to the fragment, and
            every id prefixed uniquely so several reports can share a notebook.

    Raises:
        InputError: ``out_dir`` is not a complete run folder (a ``ValueError``); the
            message names the folder or file and what to do.
    """
    return render_report(load_run(out_dir), inline=inline)


def write_report(run: RunView) -> Path:
    """Write ``report.html``, ``layer_params.png`` and ``layer_time.png`` into ``run.path``.

    ``run`` may hold its frames in memory (a run being saved) or as the folder's PNG files.

    Returns:
        Path of ``report.html``.

    Raises:
        ValueError: ``run`` has no folder (``run.path`` is None).
    """
    if run.path is None:
        raise ValueError("run: a report is written into a run folder; this run has none")
    html_text = render_report(run, inline=False)
    write_plots(run)
    path = write_text(run.path / names.REPORT, html_text)
    logger.debug("wrote %s (%.1f MB)", path, len(html_text.encode("utf-8")) / 1e6)
    return path


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
        InputError: ``out_dir`` is not a complete run folder (a ``ValueError``); the message
            names the folder or file and what to do.
    """
    return write_report(load_run(out_dir))
