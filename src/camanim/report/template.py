"""CSS and JavaScript inlined into ``report.html`` and ``compare.html``.

Kept as Python strings rather than package data so a report needs nothing
beyond the installed modules, and so the files cannot go missing from a wheel.

Every CSS selector starts with ``.camanim-report``: the report may be shown as a
fragment inside a Jupyter notebook, and must not restyle the notebook around it.
The scripts find their elements through an id prefix (``P``), empty in a
standalone page and unique per fragment, so two reports in one notebook keep to
themselves. Dynamic text is only ever set through ``textContent``.
"""

from __future__ import annotations

STYLE = """
.camanim-report {
  --cam-bg: #f3f4f6; --cam-card: #ffffff; --cam-ink: #1c2330; --cam-muted: #5f6b7a;
  --cam-line: #e2e5ea; --cam-accent: #2f6bde; --cam-accent-soft: #e6eeff; --cam-stage: #121519;
  --cam-brick: #e2a400; --cam-brick-soft: rgba(226, 164, 0, 0.18); --cam-best: #c2410c;
  --cam-head: #f8f9fb; --cam-hover: #f5f8ff; --cam-rule: #f0f2f5; --cam-chip: #eef0f3;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  color: var(--cam-ink); background: var(--cam-bg); text-align: left; outline: none;
}
.camanim-report *, .camanim-report *::before, .camanim-report *::after { box-sizing: border-box; }
.camanim-report code, .camanim-report .cam-mono {
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: 0.92em;
}
.camanim-report .cam-header {
  background: var(--cam-stage); color: #e9edf3; padding: 16px 28px 18px;
  display: flex; flex-wrap: wrap; align-items: flex-end; gap: 10px 44px;
}
.camanim-report .cam-brand { font-size: 12px; letter-spacing: 0.14em; text-transform: uppercase; color: #f3c64b; }
.camanim-report .cam-title { font-size: 22px; font-weight: 650; margin: 2px 0 0; line-height: 1.2; }
.camanim-report .cam-facts { display: flex; flex-wrap: wrap; gap: 8px 30px; margin: 0; }
.camanim-report .cam-facts dt {
  font-size: 11px; text-transform: uppercase; letter-spacing: 0.08em; color: #98a3b3; margin: 0;
}
.camanim-report .cam-facts dd { margin: 0; font-weight: 600; color: #f4f6f9; }
.camanim-report .cam-facts .cam-sub { font-weight: 400; color: #aab4c3; }
.camanim-report .cam-main {
  display: grid; grid-template-columns: minmax(440px, 1.05fr) minmax(420px, 1fr);
  gap: 20px; padding: 20px 28px 8px; align-items: start;
}
.camanim-report .cam-viewer {
  position: sticky; top: 12px; display: grid; gap: 16px;
  max-height: calc(100vh - 24px); overflow-y: auto; scrollbar-width: thin;
}
.camanim-report .cam-side { display: grid; gap: 16px; min-width: 0; }
.camanim-report .cam-card {
  background: var(--cam-card); border: 1px solid var(--cam-line); border-radius: 12px;
  padding: 14px 16px 12px; box-shadow: 0 1px 2px rgba(16, 24, 40, 0.05); min-width: 0;
}
.camanim-report .cam-card h2 {
  font-size: 13px; font-weight: 650; margin: 0 0 2px; color: var(--cam-ink);
}
.camanim-report .cam-card .cam-note { font-size: 12px; color: var(--cam-muted); margin: 0 0 8px; }
.camanim-report .cam-stage { background: var(--cam-stage); color: #cdd4de; border-radius: 12px; padding: 14px; }
.camanim-report .cam-frames { display: grid; grid-template-columns: repeat(var(--cam-cols, 2), minmax(0, 1fr)); gap: 12px; }
.camanim-report .cam-frames figure { margin: 0; }
.camanim-report .cam-frames img {
  display: block; width: 100%; height: auto; max-height: 62vh; object-fit: contain;
  border-radius: 6px; background: #000; min-height: 40px;
}
.camanim-report .cam-tile {
  display: block; width: 100%; max-height: 62vh; border-radius: 6px; background-color: #000;
  background-repeat: no-repeat; image-rendering: auto;
}
.camanim-report .cam-tile[hidden], .camanim-report .cam-sheet[hidden] { display: none; }
.camanim-report .cam-frames img.cam-sheet { max-height: none; }
.camanim-report .cam-colourbar { margin-top: 6px; }
.camanim-report .cam-colourbar-ramp { height: 8px; border-radius: 3px; }
.camanim-report .cam-colourbar-labels { display: flex; justify-content: space-between; font-size: 11px; color: #9aa5b5; }
.camanim-report .cam-top { margin: 0; padding: 0; list-style: none; font-weight: 500; font-size: 12.5px; }
.camanim-report .cam-top li { white-space: nowrap; }
.camanim-report .cam-top .cam-top-p { display: inline-block; min-width: 3.4em; color: #f3c64b; font-variant-numeric: tabular-nums; }
.camanim-report .cam-downloads { margin: 6px 0 0; }
.camanim-report .cam-frames figcaption { font-size: 12px; color: #9aa5b5; margin-top: 6px; }
.camanim-report .cam-frames figcaption b { color: #e9edf3; font-weight: 600; }
.camanim-report .cam-controls { display: flex; align-items: center; gap: 12px; margin-top: 14px; }
.camanim-report .cam-controls input[type="range"] { flex: 1; min-width: 80px; accent-color: #f3c64b; cursor: pointer; }
.camanim-report .cam-button {
  font: inherit; font-size: 13px; font-weight: 600; color: #121519; background: #f3c64b;
  border: 0; border-radius: 8px; padding: 6px 14px; cursor: pointer; min-width: 86px;
}
.camanim-report .cam-button:hover { background: #ffd667; }
.camanim-report .cam-button:focus-visible, .camanim-report input:focus-visible { outline: 2px solid #8fb3ff; outline-offset: 2px; }
.camanim-report .cam-toggle { display: inline-flex; border: 1px solid #3a414c; border-radius: 8px; overflow: hidden; }
.camanim-report .cam-toggle button {
  font: inherit; font-size: 12px; color: #cdd4de; background: transparent; border: 0; padding: 5px 10px; cursor: pointer;
}
.camanim-report .cam-toggle button[aria-pressed="true"] { background: #3a414c; color: #fff; }
.camanim-report .cam-counter { font-variant-numeric: tabular-nums; color: #9aa5b5; font-size: 12px; min-width: 74px; text-align: right; }
.camanim-report .cam-caption {
  margin-top: 10px; padding-top: 10px; border-top: 1px solid #262b33; display: flex; flex-wrap: wrap;
  gap: 4px 12px; align-items: baseline; min-height: 2.4em;
}
.camanim-report .cam-caption .cam-cap-index { color: #f3c64b; font-weight: 650; font-variant-numeric: tabular-nums; }
.camanim-report .cam-caption .cam-cap-name { color: #ffffff; font-size: 14px; word-break: break-all; }
.camanim-report .cam-caption .cam-cap-meta { color: #9aa5b5; font-size: 12px; }
.camanim-report .cam-chart { display: block; width: 100%; height: auto; overflow: visible; }
.camanim-report .cam-chart text { font-size: 11px; fill: var(--cam-muted); font-family: inherit; }
.camanim-report .cam-chart .cam-axis { stroke: #c9ced6; stroke-width: 1; fill: none; }
.camanim-report .cam-chart .cam-grid { stroke: var(--cam-rule); stroke-width: 1; }
.camanim-report .cam-chart .cam-bar { fill: #8ea7d9; }
.camanim-report .cam-chart .cam-bar-time { fill: #7fb8a4; }
.camanim-report .cam-chart .cam-hit { fill: transparent; cursor: crosshair; }
.camanim-report .cam-chart .cam-cursor { stroke: var(--cam-accent); stroke-width: 1.5; stroke-dasharray: 4 3; pointer-events: none; }
.camanim-report .cam-chart .cam-cursor-label { fill: var(--cam-accent); font-weight: 600; pointer-events: none; }
.camanim-report .cam-chart .cam-yb-band { fill: var(--cam-brick-soft); pointer-events: none; }
.camanim-report .cam-chart .cam-yb-line { stroke: var(--cam-brick); stroke-width: 2; fill: none; pointer-events: none; }
.camanim-report .cam-chart .cam-yb-point { fill: var(--cam-brick); stroke: #fff; stroke-width: 1; cursor: pointer; }
.camanim-report .cam-chart .cam-yb-point.cam-dense { stroke: none; fill-opacity: 0.9; }
.camanim-report .cam-chart .cam-yb-point:hover { fill: var(--cam-best); }
.camanim-report .cam-chart .cam-yb-point.cam-best { fill: var(--cam-best); stroke: #fff; stroke-width: 2; }
.camanim-report .cam-chart .cam-best-label { fill: var(--cam-best); font-weight: 650; }
.camanim-report .cam-chart .cam-chance { fill: rgba(95, 107, 122, 0.22); pointer-events: none; }
.camanim-report .cam-chart .cam-yb-point.cam-below { fill: #fff; stroke: var(--cam-brick); stroke-width: 1.2; }
.camanim-report .cam-chart .cam-yb-point.cam-best.cam-warned { fill: none; stroke: var(--cam-best); stroke-width: 2.2; }
.camanim-report .cam-chart .cam-y-label { font-size: 10.5px; fill: var(--cam-muted); }
.camanim-report .cam-chart .cam-legend { font-size: 10.5px; fill: var(--cam-muted); }
.camanim-report .cam-chart .cam-morf-line { stroke: #c0392b; stroke-width: 1.6; fill: none; }
.camanim-report .cam-chart .cam-lerf-line { stroke: #2471a3; stroke-width: 1.6; fill: none; }
.camanim-report .cam-chart circle.cam-morf-line { fill: #c0392b; }
.camanim-report .cam-chart circle.cam-lerf-line { fill: #2471a3; }
.camanim-report .cam-chart .cam-morf-chance { stroke: #c0392b; stroke-dasharray: 5 3; opacity: 0.7; }
.camanim-report .cam-chart .cam-lerf-chance { stroke: #2471a3; stroke-dasharray: 5 3; opacity: 0.7; }
.camanim-report .cam-statement { font-size: 12.5px; margin: 4px 0 6px; }
.camanim-report .cam-warning {
  font-size: 12.5px; margin: 4px 0 6px; padding: 6px 10px; border-radius: 8px; background: #fff4e5;
  color: #8a3b00; border-left: 3px solid var(--cam-best);
}
.camanim-report .cam-facts .cam-warning-text { display: block; max-width: 46em; font-weight: 500; color: #ffb37a; }
.camanim-report .cam-flag-warn { background: #fde2d2; color: #8a3b00; font-weight: 600; }
.camanim-report .cam-flag-note { background: #e7f0ff; color: #1f4fa8; white-space: normal; }
.camanim-report th[data-col] { cursor: pointer; }
.camanim-report .cam-sort {
  font: inherit; color: inherit; text-transform: inherit; letter-spacing: inherit; background: none; border: 0;
  padding: 0; cursor: pointer;
}
.camanim-report th[aria-sort="descending"] .cam-sort::after { content: " \\25BC"; }
.camanim-report th[aria-sort="ascending"] .cam-sort::after { content: " \\25B2"; }
.camanim-report td.cam-yb .cam-pm { font-size: 10.5px; color: var(--cam-muted); }
.camanim-report td.cam-yb .cam-above { color: #1e8449; font-size: 10px; margin-right: 3px; }
.camanim-report td.cam-yb .cam-below { color: #98a2b1; font-size: 10px; margin-right: 3px; }
.camanim-report td.cam-type { font-size: 12px; }
.camanim-report .cam-chart .cam-zero { stroke: #c9ced6; stroke-dasharray: 3 3; }
.camanim-report .cam-table-wrap {
  max-height: 62vh; overflow: auto; position: relative; border-top: 1px solid var(--cam-line); margin: 6px -16px -12px;
}
.camanim-report table { width: 100%; border-collapse: separate; border-spacing: 0; font-size: 12.5px; }
.camanim-report thead th {
  position: sticky; top: 0; z-index: 1; background: var(--cam-head); color: var(--cam-muted); font-weight: 600;
  font-size: 11px; text-transform: uppercase; letter-spacing: 0.05em; text-align: left;
  padding: 7px 4px; border-bottom: 1px solid var(--cam-line); white-space: nowrap;
}
.camanim-report tbody td { padding: 5px 4px; border-bottom: 1px solid var(--cam-rule); vertical-align: top; }
.camanim-report tbody tr { cursor: pointer; }
.camanim-report tbody tr:hover { background: var(--cam-hover); }
.camanim-report tbody tr.cam-current { background: var(--cam-accent-soft); box-shadow: inset 3px 0 0 var(--cam-accent); }
.camanim-report th.cam-num, .camanim-report td.cam-num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.camanim-report td.cam-name { min-width: 8em; }
.camanim-report td.cam-name code { overflow-wrap: anywhere; color: var(--cam-ink); }
.camanim-report td.cam-dim { color: var(--cam-muted); font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
.camanim-report .cam-layout { display: block; font-size: 10.5px; color: #98a2b1; }
.camanim-report .cam-flags { margin-top: 2px; }
.camanim-report .cam-flag {
  display: inline-block; font-size: 11px; line-height: 1.5; padding: 0 7px; border-radius: 999px;
  background: var(--cam-chip); color: var(--cam-muted); white-space: nowrap; margin: 0 4px 2px 0;
}
.camanim-report .cam-flag-best { background: #fff1c2; color: #8a5a00; font-weight: 600; }
.camanim-report .cam-link {
  font: inherit; color: #f3c64b; background: none; border: 0; padding: 0; cursor: pointer; text-decoration: underline;
}
.camanim-report .cam-footer { padding: 10px 28px 24px; font-size: 12px; color: var(--cam-muted); }
.camanim-report .cam-footer a { color: var(--cam-accent); }
.camanim-report .cam-cols { display: grid; grid-template-columns: repeat(auto-fit, minmax(230px, 1fr)); gap: 14px; }
.camanim-report .cam-col { background: var(--cam-stage); border-radius: 12px; padding: 12px; color: #cdd4de; min-width: 0; }
.camanim-report .cam-col h2 { margin: 0; font-size: 15px; color: #fff; font-weight: 650; }
.camanim-report .cam-col .cam-col-sub { font-size: 12px; color: #9aa5b5; margin: 2px 0 8px; }
.camanim-report .cam-col img {
  display: block; width: 100%; height: auto; max-height: 66vh; object-fit: contain; border-radius: 6px; background: #000;
}
.camanim-report .cam-col .cam-caption { margin-top: 8px; padding-top: 8px; }
.camanim-report .cam-compare-controls {
  display: flex; flex-wrap: wrap; align-items: center; gap: 12px; background: var(--cam-stage);
  border-radius: 12px; padding: 12px 14px; color: #cdd4de; position: sticky; top: 8px; z-index: 2;
}
.camanim-report .cam-compare-controls input[type="range"] { flex: 1; min-width: 160px; accent-color: #f3c64b; }
.camanim-report .cam-compare { padding: 20px 28px; display: grid; gap: 16px; }
.camanim-report.cam-inline .cam-viewer, .camanim-report.cam-inline .cam-compare-controls { position: static; }
.camanim-report.cam-inline .cam-viewer { max-height: none; overflow: visible; }
.camanim-report.cam-inline .cam-table-wrap { max-height: 420px; }
@media (max-width: 1000px) {
  .camanim-report .cam-main { grid-template-columns: minmax(0, 1fr); padding: 14px; }
  .camanim-report .cam-viewer { position: static; max-height: none; overflow: visible; }
  .camanim-report .cam-header { padding: 14px; }
}
/* dark mode last, so it overrides the colours above */
@media (prefers-color-scheme: dark) {
  .camanim-report {
    --cam-bg: #0f1216; --cam-card: #181c22; --cam-ink: #e4e8ee; --cam-muted: #9aa5b5; --cam-line: #2a3039;
    --cam-accent: #7aa7ff; --cam-accent-soft: #1d2a44; --cam-stage: #0a0c0f;
    --cam-head: #1e232b; --cam-hover: #1c2433; --cam-rule: #232932; --cam-chip: #262c35;
  }
  .camanim-report .cam-warning { background: #3a2510; color: #ffc58f; }
  .camanim-report .cam-flag-best { background: #4a3a0c; color: #ffd980; }
  .camanim-report .cam-flag-warn { background: #4a2410; color: #ffb37a; }
  .camanim-report .cam-flag-note { background: #1d2a44; color: #a9c4ff; }
  .camanim-report .cam-chart .cam-axis, .camanim-report .cam-chart .cam-zero { stroke: #4a525e; }
  .camanim-report .cam-chart .cam-yb-point { stroke: #181c22; }
}
"""

# Standalone pages only: the page itself, which a fragment must leave alone.
PAGE_STYLE = ("html, body { margin: 0; background: #f3f4f6; } "
              "@media (prefers-color-scheme: dark) { html, body { background: #0f1216; color-scheme: dark; } }")

REPORT_JS = """
(function () {
  "use strict";
  var P = __PREFIX__;
  function $(id) { return document.getElementById(P + id); }
  function readJSON(id) { return JSON.parse($(id).textContent); }

  var data = readJSON("report-data");
  var layers = data.layers;
  var n = layers.length;
  var frames = {};
  var sheets = data.sheets || {};
  data.norms.forEach(function (norm) {
    if (sheets[norm]) {
      // A notebook: the tile shows one cell of the contact sheet; the sheet itself (what shows
      // without JavaScript) is hidden.
      var sheet = $("sheet-" + norm), tile = $("frame-" + norm), s = sheets[norm];
      tile.style.backgroundImage = "url(" + JSON.stringify(sheet.src) + ")";
      tile.style.backgroundSize = (s.cols * 100) + "% " + (s.rows * 100) + "%";
      tile.hidden = false;
      sheet.hidden = true;
      var note = $("sheet-note-" + norm);
      if (note) { note.hidden = true; }
    } else {
      frames[norm] = readJSON("frames-data-" + norm);
    }
  });

  var root = $("root");
  var slider = $("layer-slider");
  var playButton = $("play");
  var capIndex = $("caption-index");
  var capName = $("caption-name");
  var capMeta = $("caption-meta");
  var table = $("layer-table");
  // Rows by layer index: sorting the table reorders them, the layer they show stays.
  var rows = [];
  if (table) { Array.prototype.forEach.call(table.tBodies[0].rows, function (r) { rows[Number(r.dataset.index)] = r; }); }
  var tableWrap = $("table-wrap");
  var charts = Array.prototype.slice.call(root.querySelectorAll("svg.cam-chart"));
  var images = data.norms.map(function (norm) { return $("frame-" + norm); });
  var current = -1;
  var timer = null;

  function describe(layer) {
    var parts = [layer.type || "?"];
    if (layer.shape) { parts.push(layer.shape.join("\\u00d7")); }
    if (layer.non_spatial) { parts.push("non-spatial"); }
    else if (layer.layout) { parts.push(layer.layout); }
    return parts.join(" \\u00b7 ");
  }

  function scrollRowIntoWrap(row) {
    // Only the table scrolls: scrubbing the slider must not move the page.
    if (!tableWrap) { return; }
    var head = table.tHead ? table.tHead.offsetHeight : 0;
    var top = row.offsetTop;
    var bottom = top + row.offsetHeight;
    if (top - head < tableWrap.scrollTop) {
      tableWrap.scrollTop = top - head;
    } else if (bottom > tableWrap.scrollTop + tableWrap.clientHeight) {
      tableWrap.scrollTop = bottom - tableWrap.clientHeight;
    }
  }

  function placeCursor(svg, i) {
    var x = Number(svg.dataset.x0) + i * Number(svg.dataset.dx);
    var cursor = svg.querySelector(".cam-cursor");
    if (cursor) {
      cursor.setAttribute("x1", x.toFixed(2));
      cursor.setAttribute("x2", x.toFixed(2));
    }
  }

  function go(i) {
    i = Math.max(0, Math.min(n - 1, Math.round(Number(i)) || 0));
    if (i === current) { return; }
    var previous = current;
    current = i;
    slider.value = String(i);
    data.norms.forEach(function (norm, k) {
      if (!images[k]) { return; }
      var s = sheets[norm];
      if (s) {
        var c = i % s.cols, r = Math.floor(i / s.cols);
        images[k].style.backgroundPosition = (s.cols > 1 ? c / (s.cols - 1) * 100 : 0) + "% " +
          (s.rows > 1 ? r / (s.rows - 1) * 100 : 0) + "%";
      } else {
        images[k].src = frames[norm][i];
      }
    });
    var layer = layers[i];
    capIndex.textContent = "Layer " + (i + 1) + " / " + n;
    capName.textContent = layer.name;
    // what a pass-through layer carries ("BatchNorm output, before activation"), from ybroad.json
    var note = data.ybroad && data.ybroad.notes ? data.ybroad.notes[i] : null;
    capMeta.textContent = describe(layer) + (note ? " \u00b7 " + note : "");
    root.dataset.layer = String(i);
    if (!data.inline) {
      document.body.dataset.layer = String(i);
      // the address names the layer (1-based, as shown), so a link opens it; no history entry per step
      if (history.replaceState) { history.replaceState(null, "", "#layer=" + (i + 1)); }
    }
    if (previous >= 0 && rows[previous]) { rows[previous].classList.remove("cam-current"); }
    if (rows[i]) {
      rows[i].classList.add("cam-current");
      scrollRowIntoWrap(rows[i]);
    }
    charts.forEach(function (svg) { placeCursor(svg, i); });
    // Decode the next frame ahead of time so playback does not stutter.
    if (i + 1 < n) { data.norms.forEach(function (norm) { if (frames[norm]) { new Image().src = frames[norm][i + 1]; } }); }
  }

  function setPlaying(on) {
    if (timer !== null) { clearInterval(timer); timer = null; }
    if (on) {
      if (current >= n - 1) { go(0); }
      timer = setInterval(function () {
        if (current >= n - 1) { setPlaying(false); } else { go(current + 1); }
      }, 1000 / Math.max(1, data.fps));
    }
    playButton.textContent = on ? "\\u275a\\u275a Pause" : "\\u25b6 Play";
    playButton.setAttribute("aria-pressed", on ? "true" : "false");
    root.dataset.playing = on ? "true" : "false";
  }

  slider.addEventListener("input", function () { go(slider.value); });
  playButton.addEventListener("click", function () { setPlaying(timer === null); });

  if (table) {
    table.tBodies[0].addEventListener("click", function (ev) {
      var row = ev.target.closest("tr[data-index]");
      if (row) { go(row.dataset.index); }
    });
    // Sortable numeric columns: the first click sorts descending (ybROAD: best first), the next ascending;
    // rows without a value stay last either way.
    table.tHead.addEventListener("click", function (ev) {
      // the whole header cell sorts, not only its label (the button keeps it reachable by keyboard)
      var th = ev.target.closest("th[data-col]");
      if (!th || !th.querySelector(".cam-sort")) { return; }
      var col = Number(th.dataset.col);
      var descending = th.getAttribute("aria-sort") !== "descending";
      Array.prototype.forEach.call(table.tHead.querySelectorAll("th[data-col]"), function (h) {
        h.setAttribute("aria-sort", "none");
      });
      th.setAttribute("aria-sort", descending ? "descending" : "ascending");
      var body = table.tBodies[0];
      var sorted = Array.prototype.slice.call(body.rows).sort(function (a, b) {
        var x = a.cells[col].dataset.sort, y = b.cells[col].dataset.sort;
        if (x === "" || y === "") { return (x === "") - (y === "") || Number(a.dataset.index) - Number(b.dataset.index); }
        var d = Number(x) - Number(y);
        return (descending ? -d : d) || Number(a.dataset.index) - Number(b.dataset.index);
      });
      sorted.forEach(function (r) { body.appendChild(r); });
      if (rows[current]) { scrollRowIntoWrap(rows[current]); }
    });
  }

  root.addEventListener("click", function (ev) {
    var jump = ev.target.closest(".cam-jump[data-index]");
    if (jump && root.contains(jump)) { go(jump.dataset.index); }
  });

  charts.forEach(function (svg) {
    svg.addEventListener("click", function (ev) {
      var point = ev.target.closest("[data-index]");
      if (point && svg.contains(point)) { go(point.dataset.index); return; }
      var ctm = svg.getScreenCTM();
      if (!ctm) { return; }
      var pt = svg.createSVGPoint();
      pt.x = ev.clientX;
      pt.y = ev.clientY;
      var local = pt.matrixTransform(ctm.inverse());
      go((local.x - Number(svg.dataset.x0)) / Number(svg.dataset.dx));
    });
  });

  // A standalone page listens everywhere; a notebook fragment only when focused,
  // so two reports in one notebook (and the notebook's own shortcuts) stay apart.
  var keyTarget = data.inline ? root : document;
  keyTarget.addEventListener("keydown", function (ev) {
    if (ev.altKey || ev.ctrlKey || ev.metaKey) { return; }
    var t = ev.target;
    if (t === slider) { return; }  // the range input steps itself and fires "input"
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)) { return; }
    var handled = true;
    if (ev.key === "ArrowRight") { go(current + 1); }
    else if (ev.key === "ArrowLeft") { go(current - 1); }
    else if (ev.key === "Home") { go(0); }
    else if (ev.key === "End") { go(n - 1); }
    else if (ev.key === " " && t !== playButton) { setPlaying(timer === null); }
    else { handled = false; }
    if (handled) {
      ev.preventDefault();
      if (data.inline) { ev.stopPropagation(); }
    }
  });

  // report.html#layer=N opens layer N (1-based, as the caption and the table count)
  function fromHash() {
    var m = /^#layer=(\\d+)$/.exec(location.hash || "");
    return m ? Number(m[1]) - 1 : null;
  }
  if (!data.inline) {
    window.addEventListener("hashchange", function () { var k = fromHash(); if (k !== null) { go(k); } });
  }
  var start = data.inline ? null : fromHash();

  setPlaying(false);
  go(start === null ? 0 : start);
})();
"""

COMPARE_JS = """
(function () {
  "use strict";
  var P = __PREFIX__;
  function $(id) { return document.getElementById(P + id); }
  function readJSON(id) { return JSON.parse($(id).textContent); }

  var data = readJSON("compare-data");
  var runs = data.runs;
  var steps = data.steps;
  var frames = runs.map(function (run, r) {
    var byNorm = {};
    data.norms.forEach(function (norm) { byNorm[norm] = readJSON("frames-data-" + r + "-" + norm); });
    return byNorm;
  });
  var root = $("root");
  var slider = $("depth-slider");
  var playButton = $("play");
  var readout = $("depth-readout");
  var norm = data.norms[0];
  var current = -1;
  var timer = null;

  function render() {
    var s = current;
    var t = steps > 1 ? s / (steps - 1) : 0;
    readout.textContent = "depth " + t.toFixed(2) + " \\u00b7 step " + (s + 1) + " / " + steps;
    runs.forEach(function (run, r) {
      var i = data.mapping[r][s];
      var layer = run.layers[i];
      $("frame-" + r).src = frames[r][norm][i];
      $("caption-index-" + r).textContent = "Layer " + (i + 1) + " / " + run.layers.length;
      $("caption-name-" + r).textContent = layer.name;
      $("caption-meta-" + r).textContent = layer.type || "";
      $("caption-" + r).dataset.layer = String(i);
    });
    root.dataset.step = String(s);
    if (!data.inline) { document.body.dataset.step = String(s); }
  }

  function go(s) {
    s = Math.max(0, Math.min(steps - 1, Math.round(Number(s)) || 0));
    if (s === current) { return; }
    current = s;
    slider.value = String(s);
    render();
  }

  function setNorm(name) {
    norm = name;
    data.norms.forEach(function (other) {
      var b = $("norm-" + other);
      if (b) { b.setAttribute("aria-pressed", other === name ? "true" : "false"); }
    });
    if (current >= 0) { render(); }
  }

  function setPlaying(on) {
    if (timer !== null) { clearInterval(timer); timer = null; }
    if (on) {
      if (current >= steps - 1) { go(0); }
      timer = setInterval(function () {
        if (current >= steps - 1) { setPlaying(false); } else { go(current + 1); }
      }, 1000 / Math.max(1, data.fps));
    }
    playButton.textContent = on ? "\\u275a\\u275a Pause" : "\\u25b6 Play";
    playButton.setAttribute("aria-pressed", on ? "true" : "false");
    root.dataset.playing = on ? "true" : "false";
  }

  slider.addEventListener("input", function () { go(slider.value); });
  playButton.addEventListener("click", function () { setPlaying(timer === null); });
  data.norms.forEach(function (name) {
    var b = $("norm-" + name);
    if (b) { b.addEventListener("click", function () { setNorm(name); }); }
  });

  var keyTarget = data.inline ? root : document;
  keyTarget.addEventListener("keydown", function (ev) {
    if (ev.altKey || ev.ctrlKey || ev.metaKey) { return; }
    var t = ev.target;
    if (t === slider) { return; }
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.isContentEditable)) { return; }
    var handled = true;
    if (ev.key === "ArrowRight") { go(current + 1); }
    else if (ev.key === "ArrowLeft") { go(current - 1); }
    else if (ev.key === "Home") { go(0); }
    else if (ev.key === "End") { go(steps - 1); }
    else if (ev.key === " " && t !== playButton) { setPlaying(timer === null); }
    else { handled = false; }
    if (handled) {
      ev.preventDefault();
      if (data.inline) { ev.stopPropagation(); }
    }
  });

  setNorm(norm);
  setPlaying(false);
  go(0);
})();
"""
