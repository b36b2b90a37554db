"""``report.html``: one self-contained, offline page per run (viewer, ybROAD curve, layer table, charts)."""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..draw import colormap_lut
from ..errors import InputError
from ..metrics import best_words
from ..rundir import RunView, load_run, names, write_text
from ..sources import load_image
from .charts import bar_chart, road_curves_chart, ybroad_chart, ybroad_series
from .html import (
    Sheet,
    breakable,
    contact_sheet,
    data_uri,
    encode_frames,
    esc,
    fmt_int,
    fmt_ms,
    fmt_percent,
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


def _selection_text(manifest: dict[str, Any], shown: int) -> str:
    """What ``--layers`` selected and what was left out after the pass, as the header's small print."""
    spec = get_in(manifest, "options", "layers")
    recorded = get_in(manifest, "options", "layers_recorded")
    left = get_in(manifest, "options", "layers_left_out", default={}) or {}
    parts = []
    if isinstance(recorded, int) and recorded != shown:
        words = [f"{shown:,} of {recorded:,} recorded"]
        if left.get("same_cam"):
            words.append(f"{left['same_cam']:,} sharing another layer's CAM left out")
        if left.get("non_spatial"):
            words.append(f"{left['non_spatial']:,} non-spatial left out")
        parts.append("; ".join(words))
    if spec is not None and spec != "all":
        text = spec if isinstance(spec, str) else ",".join(map(str, spec))
        parts.append("--layers " + (text if len(text) <= 60 else text[:59] + "…"))
    return "".join(f'<span class="cam-sub" style="display:block">{esc(p)}</span>' for p in parts)


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
            sub.append(fmt_percent(score) if 0 <= score <= 1 else f"{score:.4g}")
            probability = get_in(m, "options", "probability")  # softmax or sigmoid
            if probability:
                sub.append(esc(probability))
        if sub:
            text += f' <span class="cam-sub">{" · ".join(sub)}</span>'
        predicted = m["top"][0] if isinstance(m.get("top"), list) and m["top"] and isinstance(m["top"][0], dict) else None
        if predicted is not None and predicted.get("index") != index and target.get("kind") != "value":
            name = predicted.get("label") if predicted.get("label") is not None else f"class {predicted.get('index')}"
            text += (f'<span class="cam-sub cam-predicted" style="display:block">predicted: {esc(name)} '
                     f'#{esc(predicted.get("index"))}</span>')
        items.append(("Target", text))
    shared = sum(1 for layer in run.layers if isinstance(layer.get("same_as"), int))
    shared_text = (f' <span class="cam-sub" title="layers whose output is another layer\'s very tensor '
                   f'(Identity, containers returning a child\'s output): their CAM repeats that layer\'s">'
                   f"{shared:,} share another layer's CAM</span>") if shared else ""
    items.append(("Layers", f"{len(run.layers):,}{shared_text}{_selection_text(m, len(run.layers))}"))
    top = m.get("top") if isinstance(m.get("top"), list) else []
    if top:
        rows = "".join(
            f'<li><span class="cam-top-p">{fmt_percent(t.get("score", 0))}</span> '
            f'{esc(t.get("label") if t.get("label") is not None else "class " + str(t.get("index")))} '
            f'<span class="cam-sub">#{esc(t.get("index"))}</span></li>'
            for t in top if isinstance(t, dict) and isinstance(t.get("score"), (int, float)))
        items.append(("Top 5", f'<ol class="cam-top" id="__P__top5">{rows}</ol>'))
    if series is not None:
        best = series["best"]
        mean = series["mean"]
        mean_text = f' <span class="cam-sub">mean {mean:.3g}</span>' if isinstance(mean, (int, float)) else ""
        low, high = series["low"][best], series["high"][best]
        ci = f" [{low:.3g}, {high:.3g}]" if low is not None and high is not None else ""
        jump = (f'<button type="button" class="cam-link cam-jump" data-index="{best}" '
                f'title="show this layer">{series["values"][best]:.3g}{ci} @ layer {best + 1}</button>')
        if series["warnings"]:
            # No star for a pick that cannot be trusted: the warning, in words, takes its place.
            items.append(("ybROAD highest", jump + mean_text))
            items.append(("ybROAD warning", "".join(f'<span class="cam-warning-text">{esc(w)}</span>'
                                                    for w in series["warnings"])))
        else:
            items.append(("ybROAD best ★", jump + mean_text))
    return "".join(f"<div><dt>{label}</dt><dd>{value}</dd></div>" for label, value in items)


def crop_words(crop: dict[str, Any]) -> str:
    """What the preprocessing cut, in words, from the manifest's ``image.crop`` (see ``Preprocess.crop_box``)."""
    ch, cw = crop["crop"]
    rw, rh = crop["resized"]
    left, top, right, bottom = crop["lost"]

    def axis(name: str, a: float, b: float, sides: str) -> str:
        if a == b == 0:
            return f"nothing of the {name} lost"
        if a < 0 or b < 0:
            return f"the {name} padded by {-a * 100:.1f}% and {-b * 100:.1f}%"
        if abs(a - b) < 0.005:
            return f"{a * 100:.1f}% of the {name} lost at {sides}"
        return f"{a * 100:.1f}% and {b * 100:.1f}% of the {name} lost at {sides}"

    return (f"shorter side resized to {crop['resize']} ({rw}×{rh}), centre crop {cw}×{ch}: "
            f"{axis('width', left, right, 'each side')}, {axis('height', top, bottom, 'top and bottom')}")


def _original_thumbnail(info: dict[str, Any], longest: int = 320) -> np.ndarray | None:
    """The original image again, downscaled to ``longest`` pixels, or None when it cannot be read as it was."""
    source = str(info.get("source", ""))
    if not (source.startswith("sample:") or Path(source).is_file()):
        return None  # a PIL image, array or tensor given in Python, or a file since moved
    try:
        img, _ = load_image(source)
    except InputError:
        return None
    if list(img.size) != list(info.get("original_size") or []):
        return None  # the file changed since the run
    img.thumbnail((longest, longest))
    return np.asarray(img, dtype=np.uint8)


def input_card(run: RunView) -> str:
    """The original image with the region the model saw drawn on it, and what the crop cut in words.

    Empty when the manifest has no crop (a tensor, a user transform, or a run made before crops were recorded).
    """
    info = run.manifest.get("image")
    crop = info.get("crop") if isinstance(info, dict) else None
    if not isinstance(crop, dict) or "box" not in crop:
        return ""
    words = crop_words(crop)
    thumb = _original_thumbnail(info)
    picture = ""
    if thumb is not None:
        w, h = info["original_size"]
        x0, y0, x1, y1 = crop["box"]
        # viewBox in original pixels: the box from the manifest is drawn as it is, whatever the thumbnail size.
        # at most 360 px tall: a tall image keeps its aspect ratio and leaves the cards below in view
        picture = (
            f'<svg class="cam-input" viewBox="0 0 {w} {h}" role="img" '
            f'style="width:min(100%, {360 * w / h:.2f}px);height:auto;display:block;margin:0 auto" '
            f'aria-label="the original image; the rectangle is what the model saw">'
            f'<image href="{data_uri(thumb)}" x="0" y="0" width="{w}" height="{h}"/>'
            f'<path d="M0 0H{w}V{h}H0Z M{x0} {y0}V{y1}H{x1}V{y0}Z" fill="rgba(0,0,0,0.45)" fill-rule="evenodd"/>'
            f'<rect class="cam-crop-box" x="{x0}" y="{y0}" width="{x1 - x0:.2f}" height="{y1 - y0:.2f}" fill="none" '
            'stroke="#ffd400" stroke-width="3" vector-effect="non-scaling-stroke"/></svg>')
    return (f'<div class="cam-card"><h2>Input</h2>{picture}'
            f'<p class="cam-note cam-crop-note">The model saw the region inside the yellow box: {esc(words)}.</p></div>')


def _colour_bar(run: RunView, norm: str, prefix: str) -> str:
    """The colour scale under a figure: the run's colormap from 0 to 1, and what 1 means for ``norm``."""
    name = get_in(run.manifest, "render", "colormap", default="jet")
    try:
        lut = colormap_lut(str(name))
    except ValueError:
        return ""
    stops = ", ".join(f"rgb({r},{g},{b}) {k * 10}%"
                      for k, (r, g, b) in enumerate(lut[[round(k * 25.5) for k in range(11)]].tolist()))
    top = {"local": "1 = this layer's max", "global": "1 = the network's max"}.get(norm, "1 = max")
    return (f'<div class="cam-colourbar" id="{prefix}colourbar-{esc(norm)}" data-colormap="{esc(name)}">'
            f'<div class="cam-colourbar-ramp" style="background: linear-gradient(to right, {stops})"></div>'
            f'<div class="cam-colourbar-labels"><span>0</span><span>{esc(top)}</span></div></div>')


def _downloads(run: RunView) -> str:
    """Links to the run's files that exist: frames folders, videos, CAMs, manifest, ybROAD CSV/JSON."""
    if run.path is None:
        return ""
    files: list[tuple[str, str]] = []
    frames = get_in(run.manifest, "frames", default={})
    for norm in run.frames:
        rel = frames.get(norm) if isinstance(frames, dict) and isinstance(frames.get(norm), str) else None
        if rel and (run.path / rel).is_dir():
            files.append((f"{norm} frames folder (PNG)", rel + "/"))
    videos = run.manifest.get("videos") if isinstance(run.manifest.get("videos"), dict) else {}
    for kind, rel in videos.items():
        if isinstance(rel, str) and (run.path / rel).is_file():
            files.append((f"{kind.replace('_', ' ')} video", rel))
    for label, rel in (("CAMs (npz)", names.CAMS), ("manifest (JSON)", names.MANIFEST),
                       ("ybROAD (CSV)", names.YBROAD_CSV), ("ybROAD (JSON)", names.YBROAD_JSON)):
        if (run.path / rel).is_file():
            files.append((label, rel))
    links = " · ".join(f'<a href="{esc(Path(rel).as_posix())}{"/" if rel.endswith("/") else ""}" download>'
                       f"{esc(label)}</a>" if not rel.endswith("/") else
                       f'<a href="{esc(rel)}">{esc(label)}</a>' for label, rel in files)
    return f'<p class="cam-downloads" id="downloads">Downloads: {links}</p>' if files else ""


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
            flags.append(f'<span class="cam-flag" title="same output tensor as layer {same_as + 1}, so the same CAM">'
                         f"same CAM as {same_as + 1}</span>")
        if i in aliases_of:
            others = ", ".join(str(j + 1) for j in aliases_of[i])
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
            f'<td class="cam-num" data-sort="{i}">{i + 1}</td>',
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


def containers(layers: list[dict[str, Any]]) -> set[int]:
    """Indices of the layers whose module contains another recorded layer's module (``layer4`` holds
    ``layer4.0.conv1``): their parameters and time include their children's."""
    modules = [str(layer.get("module") or layer.get("name") or "") for layer in layers]
    prefixes = {m for m in modules if m}
    out: set[int] = set()
    for i, m in enumerate(modules):
        if m and any(other.startswith(m + ".") for other in prefixes):
            out.add(i)
    return out


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


def _fmt_value(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _metrics_card(run: RunView, prefix: str) -> str:
    """The metrics beside ybROAD (``--metric``): each metric's chart over the layers, the table of each
    metric's best layer and the Spearman rank correlation between metrics over layers."""
    data = run.manifest.get("metrics")
    if not isinstance(data, dict) or not data.get("agreement"):
        return ""
    table = data["agreement"]
    rows = "".join(
        f"<tr><td>{esc(b['metric'])}</td><td>{'higher' if b['higher_is_better'] else 'lower'}</td>"
        f"<td><code>{esc(best_words(b if b['value'] is not None else None))}</code></td>"
        f"<td>{_fmt_value(b['value'])}</td></tr>"
        for b in table["best"])
    metrics = list(table["metrics"])
    head = "".join(f"<th>{esc(m)}</th>" for m in metrics)
    corr = "".join(
        f"<tr><th>{esc(m)}</th>" + "".join(f"<td>{'-' if r is None else f'{r:+.2f}'}</td>" for r in row) + "</tr>"
        for m, row in zip(metrics, table["spearman"]))
    charts = ""
    for m in metrics:
        if m == "road":
            continue  # the ybROAD card shows it
        values = data["values"][m]
        entry = next((b for b in table["best"] if b["metric"] == m), None)
        if entry is None or not any(v is not None for v in values):
            continue  # nothing scored
        best = entry["index"]  # None when every scored layer ties: the chart says so
        chance = (data.get("chance") or {}).get(m)
        series = {"values": values, "best": best, "value_name": m, "warnings": [],
                  "y_label": f"{m} ({'higher' if data['higher_is_better'][m] else 'lower'} is better)",
                  "baseline": {"band": chance[1:]} if chance else None}
        charts += f"<h3>{esc(m)}</h3>" + ybroad_chart(f"{prefix}metric-{m}-plot", run.layers, series)
    return ('<div class="cam-card"><h2>Faithfulness metrics</h2><p class="cam-note">Each metric per layer '
            "(grey band: chance, random pixel orders, 95%). Which layer each metric calls best, and how alike "
            "two metrics order the layers (Spearman's rho over the layers both score; each metric oriented so "
            "that higher is better).</p>"
            f'<table class="cam-table"><thead><tr><th>metric</th><th>better</th><th>best layer</th><th>value</th>'
            f"</tr></thead><tbody>{rows}</tbody></table>"
            f'<table class="cam-table"><thead><tr><th>rho</th>{head}</tr></thead><tbody>{corr}</tbody></table>'
            f"{charts}</div>")


def _figure(norm: str, prefix: str, frames: list[str] | None, sheet: Sheet | None, n: int, bar: str) -> str:
    """One normalisation's figure. A page: the current frame (the first one without JavaScript). A
    notebook: a tile the script moves over the contact sheet, and the sheet itself, every layer in
    order, which is what shows where no script runs (the script hides it)."""
    note = f"<b>{esc(norm)}</b> · {esc(_NORM_NOTES.get(norm, 'normalisation'))}"
    if sheet is None:
        first = f' src="{frames[0]}"' if frames else ""
        return (f'<figure><img id="{prefix}frame-{esc(norm)}"{first} alt="{esc(norm)} CAM of the current layer">'
                f"{bar}<figcaption>{note}</figcaption></figure>")
    th, tw = sheet.tile
    return (f'<figure><div class="cam-tile" id="{prefix}frame-{esc(norm)}" hidden role="img" '
            f'aria-label="{esc(norm)} CAM of the current layer" style="aspect-ratio: {tw} / {th}"></div>'
            f'{bar}<img class="cam-sheet" id="{prefix}sheet-{esc(norm)}" src="{sheet.uri}" '
            f'alt="{esc(norm)} CAMs of all {n} layers, in order: left to right, top to bottom">'
            f'<figcaption>{note}<span class="cam-sheet-note" id="{prefix}sheet-note-{esc(norm)}"> · '
            f"all {n} layers, left to right, top to bottom</span></figcaption></figure>")


def render_report(run: RunView, *, inline: bool) -> str:
    """The report of ``run`` (a folder or a result in memory) as an HTML page, or as a notebook fragment.

    ``inline``: a fragment for a notebook: no ``<html>``/``<body>``, styles scoped to the fragment,
    every id prefixed uniquely so several reports can share a notebook, and no video links.
    """
    prefix = id_prefix(inline)
    series = ybroad_series(run)
    norms = list(run.frames)
    # A notebook gets one small contact sheet per normalisation (visible without JavaScript too);
    # a page gets every frame at full size.
    sheets = {norm: contact_sheet(paths) for norm, paths in run.frames.items()} if inline else {}
    frames = {} if inline else {norm: encode_frames(paths, run.encoded.get(norm)) for norm, paths in run.frames.items()}
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
        "sheets": {norm: {"cols": sh.cols, "rows": sh.rows, "tile": sh.tile} for norm, sh in sheets.items()},
    }

    figures = "".join(_figure(norm, prefix, frames.get(norm), sheets.get(norm), len(run.layers),
                              _colour_bar(run, norm, prefix)) for norm in norms)
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
    # the ybROAD and metrics cards head the side column: under the sticky viewer they were cut at the window's bottom
    road_card = (_ybroad_card(run, series, prefix) if series is not None else "") + _metrics_card(run, prefix)

    # A container (a block whose children are recorded too) counts its children's parameters and time
    # again: it is left out of both charts and of the sums, so the bars add up to the network.
    boxes = containers(run.layers)
    params = [None if i in boxes else v for i, v in enumerate(numbers(run.layers, "params"))]
    ms = [None if s is None or i in boxes else s * 1000 for i, s in enumerate(numbers(run.layers, "seconds"))]
    own = [p for i, p in enumerate(params) if i not in boxes]
    zero = sum(1 for p in own if not p)
    left_out = (f" {len(boxes)} container{'s' if len(boxes) != 1 else ''} (blocks whose children are recorded "
                "too) left out: they would count their children again.") if boxes else ""
    total_ms = sum(v for v in ms if v is not None)
    side = (
        road_card
        + input_card(run)
        + '<div class="cam-card"><h2>Parameters per layer</h2>'
        f'<p class="cam-note">Log scale; {zero} of {len(own)} layers hold no parameters of their own; '
        f"{fmt_int(sum(p for p in own if p))} in all.{left_out}</p>"
        + bar_chart(prefix + "params-plot", run.layers, params, log=True, unit="params",
                     css="cam-bar-params", title="parameters per layer")
        + "</div>"
        '<div class="cam-card"><h2>Time per layer</h2>'
        f'<p class="cam-note">Milliseconds per layer, as recorded in the run; {total_ms:,.1f} ms in all.{left_out}</p>'
        + bar_chart(prefix + "time-plot", run.layers, ms, log=False, unit="ms",
                     css="cam-bar-time", title="milliseconds per layer")
        + "</div>"
        f'<div class="cam-card"><h2>Layers</h2><p class="cam-note">Execution order; click a row to show it.</p>'
        f"{_layer_table(run, series, prefix)}</div>"
    )
    versions = run.manifest.get("versions") if isinstance(run.manifest.get("versions"), dict) else {}
    version_text = ", ".join(f"{esc(k)} {esc(v)}" for k, v in versions.items())
    footer = (
        '<footer class="cam-footer">Keys: ← → step, Home / End, space plays. Layers count from 1. '
        f"{'' if inline else 'a link to <code>report.html#layer=N</code> opens layer N. '}"
        f"{('Made with ' + version_text + '.') if version_text else ''}"
        f"{'' if inline else _downloads(run)}</footer>"
    )
    root_class = "camanim-report cam-inline" if inline else "camanim-report"
    body = (
        f'<div class="{root_class}" id="{prefix}root" tabindex="-1">'
        '<header class="cam-header"><div><div class="cam-brand">CAManim report</div>'
        f'<h1 class="cam-title">{esc(run.model_name)} · {esc(run.method)}</h1></div>'
        f'<dl class="cam-facts">{_facts(run, series).replace("__P__", prefix)}</dl></header>'
        f'<div class="cam-main"><section class="cam-viewer">{viewer}</section>'
        f'<section class="cam-side">{side}</section></div>{footer}'
        + json_tag(prefix + "report-data", data)
        + "".join(json_tag(f"{prefix}frames-data-{norm}", frames[norm]) for norm in frames)
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


def write_index(out_dir: Path, runs: list[tuple[str, str, str, dict[str, Any], int]], grids: list[str]) -> Path:
    """``index.html`` at the top of a multi-run output: one row per run linking its report, and the
    methods-grid pages.

    Args:
        out_dir: the top folder.
        runs: ``(report path relative to out_dir, folder, method, target dict, layer count)`` per run.
        grids: ``compare.html`` pages, relative to ``out_dir``.

    Returns:
        Path of ``index.html``.
    """
    rows = []
    for rel, folder, method, target, n in runs:
        label = target.get("label")
        score = target.get("score")
        if target.get("kind") == "value":  # a target on the model's output: its name and value
            name = str(label)
            p = f" · value {score:.4g}" if isinstance(score, (int, float)) else ""
        else:
            name = f"{label} (#{target.get('index')})" if label is not None else f"class {target.get('index')}"
            p = f" · p={score:.3f}" if isinstance(score, (int, float)) else ""
        rows.append(f'<tr><td><a href="{esc(rel)}"><code>{esc(folder)}</code></a></td><td>{esc(method)}</td>'
                    f"<td>{esc(name)}{esc(p)}</td><td class=\"cam-num\">{n:,}</td></tr>")
    grid_links = "".join(f'<li><a href="{esc(g)}">{esc(g)}</a></li>' for g in grids)
    body = (
        '<div class="camanim-report" id="root"><header class="cam-header"><div><div class="cam-brand">CAManim</div>'
        f'<h1 class="cam-title">{len(runs)} runs</h1></div></header><div class="cam-compare"><div class="cam-card">'
        '<h2>Reports</h2><table id="runs"><thead><tr><th>Run</th><th>Method</th><th>Target</th>'
        f'<th class="cam-num">Layers</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
        + (f'<div class="cam-card"><h2>Methods side by side</h2><ul>{grid_links}</ul></div>' if grids else "")
        + "</div></div>"
    )
    return write_text(Path(out_dir) / names.INDEX, page(f"CAManim · {len(runs)} runs", body))
