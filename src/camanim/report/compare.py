"""Several runs in lock-step: ``compare.html`` and a grid video, aligned by relative depth."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from ..draw import write_mp4
from ..draw.fonts import load_font
from ..errors import InputError
from ..rundir import RunView, atomic_path, load_run, names, write_text
from .html import encode_frames, esc, fmt_percent, get_in, json_tag, page
from .template import COMPARE_JS


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

    Raises:
        ValueError: If there is no run, a run has no layer, or ``steps`` is below 1.
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


def _run_title(run: RunView) -> str:
    return f"{run.model_name} · {run.method}"


def run_titles(runs: Sequence[RunView]) -> list[str]:
    """Each run's title, ``model · method``; runs that share one also get their folder's name."""
    titles = [_run_title(run) for run in runs]
    return [f"{t} · {run.path.name if run.path is not None else f'run {r + 1}'}" if titles.count(t) > 1 else t
            for r, (t, run) in enumerate(zip(titles, runs, strict=True))]


def _run_subtitle(run: RunView) -> str:
    target = run.manifest.get("target") if isinstance(run.manifest.get("target"), dict) else {}
    parts = []
    label = target.get("label", target.get("index"))
    if label is not None:
        parts.append(str(label))
    score = target.get("score")
    if isinstance(score, (int, float)) and math.isfinite(score):
        parts.append(f"value {score:.4g}" if target.get("kind") == "value"
                     else fmt_percent(score) if 0 <= score <= 1 else f"{score:.4g}")
    parts.append(f"{len(run.layers)} layer{'s' if len(run.layers) != 1 else ''}")
    source = get_in(run.manifest, "image", "source")
    if source:
        parts.append(str(source))
    return " · ".join(parts)


def _compare_norms(runs: Sequence[RunView]) -> list[str]:
    common = [norm for norm in runs[0].frames if all(norm in run.frames for run in runs)]
    if not common:
        names = ", ".join(str(run.path) for run in runs)
        raise InputError(f"runs {names} share no normalisation; re-run them with the same --norm")
    return common


#: runs whose layer counts differ by more than this factor get a warning: one step of the shorter
#: run spans several layers of the longer one
DEPTH_RATIO = 2.0


def depth_warning(layer_counts: Sequence[int]) -> str | None:
    """A sentence when the runs' layer counts differ by more than :data:`DEPTH_RATIO` (else None)."""
    counts = [c for c in layer_counts if c > 0]
    if len(counts) < 2 or max(counts) <= DEPTH_RATIO * min(counts):
        return None
    return (f"the runs have {min(counts)} to {max(counts)} layers ({max(counts) / min(counts):.1f}x): they are "
            "lined up by relative depth, so one layer of the shorter run stands for several of the longer one; "
            "compare like with like (the same --layers pattern) for a layer-by-layer reading")


def _render_compare(runs: Sequence[RunView], mapping: list[list[int]], norms: list[str], fps: int) -> str:
    prefix = ""
    warning = depth_warning([len(run.layers) for run in runs])
    warning_html = (f'<p class="cam-warning" role="alert" id="{prefix}depth-warning">Warning: {esc(warning)}.</p>'
                    if warning else "")
    steps = len(mapping[0])
    titles = run_titles(runs)
    data = {
        "inline": False,
        "steps": steps,
        "fps": fps,
        "norms": norms,
        "mapping": mapping,
        "runs": [
            {
                "title": titles[r],
                "path": str(run.path) if run.path is not None else "",
                "model": run.manifest.get("model"),
                "method": run.manifest.get("method"),
                "target": run.manifest.get("target"),
                "layers": [{"index": layer.get("index", i), "name": layer.get("name"), "type": layer.get("type")}
                           for i, layer in enumerate(run.layers)],
            }
            for r, run in enumerate(runs)
        ],
    }
    toggle = ""
    if len(norms) > 1:
        toggle = '<div class="cam-toggle" role="group" aria-label="normalisation">' + "".join(
            f'<button type="button" id="{prefix}norm-{esc(norm)}" aria-pressed="false">{esc(norm)}</button>'
            for norm in norms
        ) + "</div>"
    columns = "".join(
        f'<div class="cam-col"><h2>{esc(titles[r])}</h2>'
        f'<div class="cam-col-sub">{esc(_run_subtitle(run))}</div>'
        f'<img id="{prefix}frame-{r}" alt="CAM of {esc(titles[r])} at the current depth">'
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
        f'<span class="cam-sub">layers per run: {esc(counts)}</span></dd></div></dl></header>'
        '<div class="cam-compare"><div class="cam-compare-controls">'
        f'<button type="button" class="cam-button" id="{prefix}play" aria-pressed="false">▶ Play</button>'
        f'<input type="range" id="{prefix}depth-slider" min="0" max="{steps - 1}" step="1" value="0" '
        'aria-label="relative depth">'
        f'<span class="cam-counter" id="{prefix}depth-readout"></span>{toggle}</div>'
        '<p class="cam-note" style="margin:0;color:var(--cam-muted);font-size:12px">'
        "Runs with different numbers of layers are aligned by relative depth: at depth t (0 = first layer, "
        "1 = last layer) a run with L layers shows its layer round(t · (L − 1)), so shorter runs repeat "
        "layers. Keys: ← → step, Home / End, space plays.</p>"
        f'{warning_html}<div class="cam-cols">{columns}</div></div>'
        + json_tag(prefix + "compare-data", data)
        + "".join(
            json_tag(f"{prefix}frames-data-{r}-{norm}", encode_frames(run.frames[norm], run.encoded.get(norm)))
            for r, run in enumerate(runs)
            for norm in norms
        )
        + f"<script>{COMPARE_JS.replace('__PREFIX__', json.dumps(prefix))}</script></div>"
    )
    return page(f"CAManim comparison · {len(runs)} runs", body)


def _even(value: int) -> int:
    return value + (value % 2)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


#: x264 settings of grid videos: imageio-ffmpeg's default quality 5 (CRF 25) and ffmpeg's default preset.
GRID_CRF, GRID_PRESET = 25, "medium"


def _frame(run: RunView, norm: str, i: int) -> Image.Image:
    """Frame ``i`` of ``run`` as an RGB image, from memory or from its PNG file."""
    frame = run.frames[norm][i]
    if isinstance(frame, np.ndarray):
        return Image.fromarray(frame).convert("RGB")
    with Image.open(frame) as img:
        return img.convert("RGB")


def write_grid_video(runs: Sequence[RunView], path: Path, fps: int, norm: str = "local") -> Path:
    """One video of several runs side by side, aligned by relative depth (:func:`align_by_depth`).

    Each tile is a run's frame of normalisation ``norm``, titled with the run's model and method and
    captioned with the layer shown; one video frame per step, as many steps as the deepest run has
    layers. H.264 yuv420p through :func:`camanim.draw.write_mp4`; written atomically.

    Raises:
        ValueError: no runs, or a run without frames of ``norm``.
    """
    if not runs or any(norm not in run.frames for run in runs):
        raise ValueError(f"runs: every run needs frames of normalisation '{norm}'")
    mapping = align_by_depth([len(run.layers) for run in runs])
    with atomic_path(Path(path)) as tmp:
        write_mp4(tmp, _grid_frames(runs, mapping, norm), fps=fps, crf=GRID_CRF, preset=GRID_PRESET)
    return Path(path)


def _grid_frames(runs: Sequence[RunView], mapping: list[list[int]], norm: str) -> Iterator[np.ndarray]:
    sizes = [_frame(run, norm, 0).size for run in runs]
    # libx264 with yuv420p needs even dimensions; every block below is even.
    tile_w = _even(max(w for w, _ in sizes))
    tile_h = _even(max(h for _, h in sizes))
    strip, gutter = 24, 4
    width = len(runs) * tile_w + (len(runs) - 1) * gutter
    height = strip + tile_h + strip
    font = load_font(13)

    base = Image.new("RGB", (width, height), (18, 21, 25))
    draw = ImageDraw.Draw(base)
    for r, title in enumerate(run_titles(runs)):
        draw.text((r * (tile_w + gutter) + 4, 5), _fit(draw, title, font, tile_w - 8),
                  fill=(255, 255, 255), font=font)

    # Mapping is monotone, so a shorter run shows the same layer on consecutive
    # steps: keep its last column instead of decoding the PNG again.
    last: dict[int, tuple[int, Image.Image]] = {}

    def column(r: int, i: int) -> Image.Image:
        if r in last and last[r][0] == i:
            return last[r][1]
        run = runs[r]
        col = Image.new("RGB", (tile_w, tile_h + strip), (18, 21, 25))
        tile = ImageOps.contain(_frame(run, norm, i), (tile_w, tile_h))
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

    steps = len(mapping[0])
    # One worker decodes and composes the next frame while ffmpeg encodes this one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(compose, 0)
        for step in range(steps):
            frame = pending.result()
            if step + 1 < steps:
                pending = pool.submit(compose, step + 1)
            yield frame


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
        ``{"html": .../compare.html, "video": .../compare_grid.mp4}`` and ``"video_global"``
        (``compare_grid_global.mp4``) when the runs have both normalisations.

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
    return write_compare([load_run(run_dir) for run_dir in run_dirs], out_dir, fps=fps)


def write_compare(runs: Sequence[RunView], out_dir: str | Path, *, fps: int = 10,
                  video_name: str = names.COMPARE_VIDEO, video: bool = True) -> dict[str, Path]:
    """``compare.html`` and the grid video (``video_name``) of runs on disk or in memory.

    Returns:
        ``{"html": .../compare.html, "video": .../<video_name>}``, and ``"video_global"`` (the same
        grid of the global frames, ``<stem>_global.mp4``) when the runs have both normalisations;
        ``video=False``: the page only.

    Raises:
        InputError: runs without a normalisation in common, or an output folder that cannot be
            created. Nothing is written then.

    Warns:
        UserWarning: the runs' layer counts differ by more than 2x (:func:`depth_warning`); the page says so too.
    """
    norms = _compare_norms(runs)
    mapping = align_by_depth([len(run.layers) for run in runs])
    html_text = _render_compare(runs, mapping, norms, fps)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output folder {out} ({exc.strerror}); choose another --out") from exc
    warning = depth_warning([len(run.layers) for run in runs])
    if warning:
        warnings.warn(warning[0].upper() + warning[1:], UserWarning, stacklevel=2)
    if not video:
        return {"html": write_text(out / names.COMPARE_HTML, html_text)}
    written = {"video": write_grid_video(runs, out / video_name, fps, "local" if "local" in norms else norms[0])}
    if "local" in norms and "global" in norms:
        written["video_global"] = write_grid_video(runs, out / names.global_variant(video_name), fps, "global")
    return {"html": write_text(out / names.COMPARE_HTML, html_text), **written}
