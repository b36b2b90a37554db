"""``sweep.html`` (one self-contained page: inline SVG, no script or file it loads) and ``sweep.png``.

The page shows, per model × method, the mean ROAD of each layer over the images with its 95%
interval as a band and the chance baseline's band; the best-layer table (with the runner-ups not
separable from the best, and the split by correct and incorrect predictions when labels were
given); the methods ranked per model; the failed items with their reasons; and every image with
its prediction and its own best layer, linking to its run reports when they were saved.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..report.html import esc, fmt_number, page
from ..rundir import atomic_path, write_text

_W, _H, _L, _R, _T, _B = 720, 220, 60, 12, 14, 34


def _num(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt_number(float(v))


def _ci(ci: Any) -> str:
    return "–" if not ci or ci[0] is None else f"[{_num(ci[0])}, {_num(ci[1])}]"


def layer_ticks(n: int, most: int = 10) -> list[int]:
    """Indices (0-based) of the x ticks of ``n`` layers: every k-th, k from 1, 2, 5, 10, 20, ... so that
    at most ``most`` show, and the last layer."""
    if n <= 0:
        return []
    step = next(k * m for m in (1, 10, 100, 1000, 10000) for k in (1, 2, 5) if n / (k * m) <= most)
    ticks = list(range(0, n, step))
    if (n - 1) - ticks[-1] >= step * 0.4:
        ticks.append(n - 1)
    return ticks


def curve_svg(element_id: str, across: dict[str, Any]) -> str:
    """An inline SVG of one (model, method): the per-layer mean (line, a point per layer), its 95% interval
    (band), the chance baseline's band (grey) and the best layer (red). x is the layer number, 1-based as in
    ``report.html``, with ticks; each point names its layer, mean and interval on hover (its ``<title>``)."""
    layers = across["layers"]
    n = len(layers)
    means = [lay["ybroad"] for lay in layers]
    lows = [lay["ybroad_ci"][0] if lay["ybroad_ci"] else lay["ybroad"] for lay in layers]
    highs = [lay["ybroad_ci"][1] if lay["ybroad_ci"] else lay["ybroad"] for lay in layers]
    base = across.get("baseline") or {}
    band = [v for v in (base.get("band") or []) if v is not None]
    pool = [v for v in means + lows + highs + band if v is not None and math.isfinite(v)] or [0.0, 1.0]
    lo, hi = min(pool + [0.0]), max(pool + [0.0])
    if hi - lo < 1e-12:
        hi = lo + 1.0
    lo, hi = lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)

    def x(i: float) -> float:
        return _L + (i + 0.5) * (_W - _L - _R) / max(n, 1)

    def y(v: float) -> float:
        return _T + (hi - v) / (hi - lo) * (_H - _T - _B)

    parts = [f'<svg id="{esc(element_id)}" class="sweep-curve" viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" '
             f'role="img" aria-label="mean ROAD per layer with 95% interval">']
    parts.append(f'<line x1="{_L}" y1="{y(0):.1f}" x2="{_W - _R}" y2="{y(0):.1f}" stroke="#999" stroke-dasharray="3,3"/>')
    if len(band) == 2:
        parts.append(f'<rect class="baseline-band" x="{_L}" y="{y(band[1]):.1f}" width="{_W - _L - _R}" '
                     f'height="{max(0.5, y(band[0]) - y(band[1])):.1f}" fill="#bbb" fill-opacity="0.35"/>')
    segs: list[list[int]] = [[]]
    for i, m in enumerate(means):
        if m is None:
            segs.append([])
        else:
            segs[-1].append(i)
    for seg in (s for s in segs if s):
        top = " ".join(f"{x(i):.1f},{y(highs[i]):.1f}" for i in seg)
        bottom = " ".join(f"{x(i):.1f},{y(lows[i]):.1f}" for i in reversed(seg))
        parts.append(f'<polygon class="ci-band" points="{top} {bottom}" fill="#1f77b4" fill-opacity="0.25"/>')
        line = " ".join(f"{x(i):.1f},{y(means[i]):.1f}" for i in seg)
        parts.append(f'<polyline class="mean" points="{line}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>')
    for i, lay in enumerate(layers):
        if means[i] is None:
            continue
        ci = f" [{_num(lows[i])}, {_num(highs[i])}]" if lay["ybroad_ci"] else ""
        parts.append(f'<circle class="layer-point" data-index="{i}" cx="{x(i):.1f}" cy="{y(means[i]):.1f}" r="2.2" '
                     f'fill="#1f77b4"><title>{i + 1} {esc(lay.get("name", ""))}: {_num(means[i])}{ci}</title></circle>')
    best = across.get("best")
    if best:
        parts.append(f'<circle class="best" cx="{x(best["index"]):.1f}" cy="{y(best["ybroad"]):.1f}" r="4" '
                     f'fill="#d62728"><title>best: {best["index"] + 1} {esc(best["name"])}: {_num(best["ybroad"])}'
                     '</title></circle>')
    for v in (lo + 0.05 * (hi - lo) / 1.1, 0.0, hi - 0.05 * (hi - lo) / 1.1):
        parts.append(f'<text x="{_L - 4}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="10">{_num(v)}</text>')
    for i in layer_ticks(n):
        parts.append(f'<text class="x-tick" x="{x(i):.1f}" y="{_H - _B + 13}" text-anchor="middle" font-size="10">'
                     f'{i + 1}<title>{esc(layers[i].get("name", ""))}</title></text>')
    parts.append(f'<text x="{(_L + _W) / 2:.0f}" y="{_H - 4}" text-anchor="middle" font-size="11">layer (1 … {n}; '
                 "hover a point for its name)</text>")
    parts.append(f'<text x="12" y="{_H / 2:.0f}" transform="rotate(-90 12 {_H / 2:.0f})" text-anchor="middle" '
                 f'font-size="11">{esc(across.get("score_label", "ROAD"))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _band(across: dict[str, Any]) -> str:
    """The chance band's cell: none for fewer than two images (a zero-width band would look precise)."""
    if across["n_images"] < 2:
        return "– (one image: no band)" if across["n_images"] == 1 else "–"
    return _ci((across.get("baseline") or {}).get("band") or [None, None])


def _best_row(model: str, method: str, split: str, across: dict[str, Any] | None) -> str:
    if across is None:
        return f"<tr><td>{esc(model)}</td><td>{esc(method)}</td><td>{split}</td><td>0</td><td colspan=5>no image</td></tr>"
    best = across.get("best")
    others = ", ".join(esc(c["name"]) for c in across.get("not_separable", [])) or "none"
    if best is None:
        return (f"<tr><td>{esc(model)}</td><td>{esc(method)}</td><td>{split}</td><td>{across['n_images']}</td>"
                f"<td colspan=5>{esc(across.get('statement', ''))}</td></tr>")
    return (f'<tr class="best-row"><td>{esc(model)}</td><td>{esc(method)}</td><td>{split}</td><td>{across["n_images"]}</td>'
            f'<td class="best-layer">{esc(best["name"])}</td><td>{_num(best["ybroad"])} {_ci(best.get("ci"))}</td>'
            f"<td>{_band(across)}</td><td>{interval_above_band(best)}</td><td>{others}</td></tr>")


def interval_above_band(best: dict[str, Any]) -> str:
    """``yes``, ``no`` or ``undetermined``: whether the best layer's 95% interval lies above the chance band's
    top (``separable_from_baseline``), as the verdict's statement, the page and the CLI's line say it."""
    return {True: "yes", False: "no"}.get(best.get("separable_from_baseline"), "undetermined")


def seconds_words(summary: dict[str, Any]) -> str:
    """This session's seconds, and all sessions' (``seconds_total``, after a resume) where they differ."""
    this, total = f"{summary['seconds']:.1f}", summary.get("seconds_total")
    if total is None or f"{total:.1f}" == this:
        return f"{this} s"
    return f"{this} s this session, {total:.1f} s in all"


def render_page(summary: dict[str, Any]) -> str:
    """The HTML of ``sweep.html`` from a sweep's summary (``sweep.json``)."""
    agg = summary["aggregates"]
    acc = summary.get("accuracy")
    facts = (f"<p>{summary['items']} items (image × model): {summary['ok']} done, {summary['failed']} failed; "
             f"{seconds_words(summary)}." + (" Accuracy: " + ", ".join(
                 f"{esc(m)} {a['correct']}/{a['images']}" for m, a in acc.items()) if acc else "") + "</p>")
    body = [f"<h1>camanim sweep</h1>{facts}"]
    body.append("<h2>Best layer per model and method</h2><table id=best-table><thead><tr><th>model</th><th>method</th>"
                "<th>images</th><th>n</th><th>best layer</th><th>mean ROAD [95% CI]</th><th>chance band</th>"
                "<th>interval above chance band</th><th>not separable from it</th></tr></thead><tbody>")
    for g in agg["groups"]:
        for split in ("all", "correct", "incorrect"):
            if split in g:
                body.append(_best_row(g["model"], g["method"], split, g[split]))
    body.append("</tbody></table>")
    warned = [(g, w) for g in agg["groups"] for w in ((g.get("all") or {}).get("warnings") or [])]
    if warned:  # images left out, layers scored on fewer images, low confidence, no layer above chance
        body.append("<ul id=warnings>" + "".join(f"<li>{esc(g['model'])} · {esc(g['method'])}: {esc(w)}</li>"
                                                 for g, w in warned) + "</ul>")
    body.append("<h2>Methods ranked per model</h2><table id=ranking><thead><tr><th>model</th><th>rank</th>"
                "<th>method</th><th>best layer</th><th>mean ROAD [95% CI]</th></tr></thead><tbody>")
    for model, ranks in agg["ranking"].items():
        for k, r in enumerate(ranks, start=1):
            body.append(f"<tr><td>{esc(model)}</td><td>{k}</td><td>{esc(r['method'])}</td><td>{esc(r['best_layer'])}</td>"
                        f"<td>{_num(r['ybroad'])} {_ci(r.get('ci'))}</td></tr>")
    for model, missing in (agg.get("unranked") or {}).items():  # not ranked: why, never an empty table
        for r in missing:
            body.append(f'<tr class="unranked"><td>{esc(model)}</td><td>–</td><td>{esc(r["method"])}</td>'
                        f'<td colspan=2>not ranked: {esc(r["reason"])}</td></tr>')
    body.append("</tbody></table><h2>ROAD per layer across images</h2>")
    for i, g in enumerate(agg["groups"]):
        if g["all"] is not None:
            body.append(f'<figure><figcaption>{esc(g["model"])} · {esc(g["method"])} · {g["all"]["n_images"]} images: '
                        f"mean, 95% interval (blue band), chance baseline (grey band), best layer (red)</figcaption>"
                        f"{curve_svg(f'curve-{i}', g['all'])}</figure>")
    if summary["failures"]:
        body.append("<h2>Failed items</h2><ul id=failures>")
        body += [f"<li>{esc(f['image'])} · {esc(f['model'])}: {esc(f['error'])}</li>" for f in summary["failures"]]
        body.append("</ul>")
    if summary.get("duplicates"):
        body.append("<h2>Duplicate files (not run again)</h2><ul id=duplicates>")
        body += [f"<li>{esc(d['path'])}: same content as {esc(d['same_as'])}</li>" for d in summary["duplicates"]]
        body.append("</ul>")
    methods = sorted({m for r in summary["per_image"] for m in r["best"]})
    body.append("<h2>Images</h2><table id=images><thead><tr><th>image</th><th>model</th><th>predicted</th><th>p (predicted)</th>"
                "<th>label</th><th>correct</th>" + "".join(f"<th>best layer: {esc(m)}</th>" for m in methods)
                + "<th>run</th></tr></thead><tbody>")
    for r in summary["per_image"]:
        pred = "failed" if r["status"] != "ok" else f"{r['predicted']}" + (f" ({esc(r['predicted_label'])})"
                                                                           if r["predicted_label"] else "")
        cells = "".join(f"<td>{esc(r['best'][m]['layer']) if r['best'].get(m) else '–'}</td>" for m in methods)
        links = " ".join(f'<a href="{esc(p)}">{esc(m)}</a>' for m, p in r["runs"].items() if m != "error")
        body.append(f"<tr><td>{esc(r['image'])}</td><td>{esc(r['model'])}</td><td>{pred}</td><td>{_num(r['predicted_probability'])}</td>"
                    f"<td>{esc(r['label'] or '–')}</td><td>{'–' if r['correct'] is None else 'yes' if r['correct'] else 'no'}</td>"
                    f"{cells}<td>{links}</td></tr>")
    body.append("</tbody></table>")
    return page("camanim sweep", "<main>" + "".join(body) + "</main>")


def write_page(path: Path, summary: dict[str, Any]) -> Path:
    """Write ``sweep.html`` atomically; returns its path."""
    return write_text(path, render_page(summary))


def write_plot(path: Path, agg: dict[str, Any]) -> Path:
    """``sweep.png``: one panel per (model, method), mean ROAD per layer with its 95% band and the chance band."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    groups = [g for g in agg["groups"] if g["all"] is not None]
    fig = Figure(figsize=(8, 2.6 * max(1, len(groups))), dpi=100)
    for k, g in enumerate(groups):
        ax = fig.add_subplot(max(1, len(groups)), 1, k + 1)
        layers = g["all"]["layers"]
        nan = float("nan")
        xs = list(range(1, len(layers) + 1))  # layer numbers, 1-based as on the page and in report.html
        mean = [nan if v["ybroad"] is None else v["ybroad"] for v in layers]
        lo = [v["ybroad_ci"][0] if v["ybroad_ci"] else nan for v in layers]
        hi = [v["ybroad_ci"][1] if v["ybroad_ci"] else nan for v in layers]
        band = (g["all"].get("baseline") or {}).get("band") or [None, None]
        if band[0] is not None:
            ax.axhspan(band[0], band[1], color="0.8", alpha=0.6, label="chance band")
        ax.fill_between(xs, lo, hi, alpha=0.3, label="95% CI")
        ax.plot(xs, mean, lw=1.2, label="mean over images")
        best = g["all"].get("best")
        if best:
            ax.plot([best["index"] + 1], [best["ybroad"]], "o", color="tab:red",
                    label=f"best: {best['index'] + 1} {best['name']}")
        ax.set_title(f"{g['model']} · {g['method']} · {g['all']['n_images']} images", fontsize=9)
        ax.set_xlabel(f"layer (1 … {len(layers)})")
        ax.set_ylabel(g["all"].get("score_label", "ROAD"))
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
