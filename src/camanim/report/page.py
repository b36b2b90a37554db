"""``report.html``: one self-contained, offline page per run (viewer, ybROAD curve, layer table, charts)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from ..rundir import RunView, load_run, names, write_text
from .charts import bar_chart, ybroad_chart, ybroad_series
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


def _facts(run: RunView, series: dict[str, Any] | None) -> str:
    m = run.manifest
    items: list[tuple[str, str]] = []
    weights = get_in(m, "model", "weights")
    items.append(("Model", esc(run.model_name) + (f' <span class="cam-sub">{esc(weights)}</span>' if weights else "")))
    source = get_in(m, "image", "source", default="?")
    size = get_in(m, "image", "size")
    size_text = f' <span class="cam-sub">{esc(fmt_shape(size))}</span>' if size else ""
    items.append(("Image", esc(source) + size_text))
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
        if isinstance(score, (int, float)) and math.isfinite(score):
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
        items.append((
            "ybROAD max",
            f'<button type="button" class="cam-link cam-jump" data-index="{best}" '
            f'title="show this layer">{series["values"][best]:.3g} @ {best}</button>{mean_text}',
        ))
    return "".join(f"<div><dt>{label}</dt><dd>{value}</dd></div>" for label, value in items)


def _layer_table(run: RunView, series: dict[str, Any] | None, prefix: str) -> str:
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
        if series is not None:
            value = series["values"][i]
            if i == series["best"]:
                flags.append('<span class="cam-flag cam-flag-best">★ best ybROAD</span>')
            elif value is None and not layer.get("non_spatial"):
                flags.append('<span class="cam-flag">no ybROAD</span>')
        flag_html = f'<div class="cam-flags">{"".join(flags)}</div>' if flags else ""
        layout = layer.get("layout")
        layout_html = f' <span class="cam-layout">{esc(layout)}</span>' if layout else ""
        cells = [
            f'<td class="cam-num">{i}</td>',
            f'<td class="cam-name"{title}><code>{breakable(name)}</code>{flag_html}</td>',
            f'<td>{esc(layer.get("type", ""))}</td>',
            f'<td class="cam-dim">{esc(fmt_shape(layer.get("shape")))}{layout_html}</td>',
            f'<td class="cam-num">{fmt_int(layer.get("params"))}</td>',
            f'<td class="cam-num">{fmt_ms(layer.get("seconds"))}</td>',
        ]
        if series is not None:
            value = series["values"][i]
            # Significant digits, not decimals: probability-scale scores are often below 0.001.
            cells.append(f'<td class="cam-num">{"—" if value is None else f"{value:.3g}"}</td>')
        parts.append(f'<tr data-index="{i}">{"".join(cells)}</tr>')
    parts.append("</tbody></table></div>")
    return "".join(parts)


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
        # Describe only what ybroad.json states; how ROAD is combined is road/metric.py's business.
        facts = ["ROAD score per layer, higher is more faithful"]
        if series.get("percentiles"):
            meaning = series.get("percent_meaning") or "pixels removed"
            facts.append(f"{', '.join(map(str, series['percentiles']))}% {meaning}")
        if series.get("score"):
            facts.append(f"score: {series['score']}")
        trials = series.get("trials")
        if isinstance(trials, int) and trials > 1:
            facts.append(f"{trials} trials, band ± 1 std")
        note = esc("; ".join(facts)) + ". Click to jump to a layer; the larger dot is the best layer."
        viewer += (
            f'<div class="cam-card"><h2>ybROAD</h2><p class="cam-note">{note}</p>'
            f"{ybroad_chart(prefix + 'ybroad-plot', run.layers, series)}</div>"
        )

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
