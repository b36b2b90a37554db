"""HTML helpers of the report pages: escaping, JSON in script tags, number formats, frames as data URIs."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .template import PAGE_STYLE, STYLE

# The report's frames are lossy previews (the PNG files are the lossless frames): JPEG at quality 80
# (Pillow's libjpeg-turbo, 4:2:0 chroma as WebP has), without Huffman optimisation. On the default run's
# 320x384 frames it encodes in 0.41 ms a frame against WebP's 3.4 (quality 80, method 0, the fastest),
# at the same fidelity (PSNR 36.3 dB against 36.5, mean over the frames) in about 34% more bytes
# (19.2 against 14.3 kB): the report's frames were the largest CPU cost of a run after the model and
# the PNG files (BENCHMARKS.md, "The default run against its floor").
_JPEG_OPTIONS = {"quality": 80}


def get_in(mapping: Any, *keys: str, default: Any = None) -> Any:
    """``mapping[k1][k2]...``, or ``default`` where a key is missing or a level is not a dict."""
    for key in keys:
        if not isinstance(mapping, dict) or key not in mapping:
            return default
        mapping = mapping[key]
    return mapping


def esc(value: Any) -> str:
    """HTML-escape anything for text and attribute positions."""
    return html.escape(str(value), quote=True)


def breakable(name: str) -> str:
    """Escaped layer name that wraps after dots (``features.denseblock3.denselayer11``), not mid-word."""
    # html.escape never emits ".", so inserting after each "." cannot split an entity.
    return esc(name).replace(".", ".<wbr>")


def finite(value: Any) -> Any:
    """Replace NaN/inf (which JSON cannot carry) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def script_json(value: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``.

    Escaping ``<``, ``>`` and ``&`` as ``\\u00XX`` keeps ``</script>`` and
    ``<!--`` in layer names from ending the element early; the text still parses
    back to the exact names.
    """
    text = json.dumps(finite(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text


def json_tag(element_id: str, value: Any) -> str:
    """``value`` as a ``<script type="application/json">`` element with id ``element_id`` (see :func:`script_json`)."""
    return f'<script type="application/json" id="{esc(element_id)}">{script_json(value)}</script>'


def fmt_shape(shape: Any) -> str:
    """A tensor shape as ``64×56×56``; an em dash for an empty or missing shape."""
    return "×".join(map(str, shape)) if isinstance(shape, (list, tuple)) and shape else "—"


def fmt_percent(p: float) -> str:
    """A probability in [0, 1] as a percentage: one decimal from 0.1% up (``77.0%``), two significant digits
    below it (``0.044%``: a target the model barely believes in is not shown as ``0.0%``)."""
    v = p * 100
    return f"{v:.1f}%" if v >= 0.1 or v == 0 else f"{v:.2g}%"


def fmt_int(value: Any) -> str:
    """A number as an integer with thousands separators (``1,234``); an em dash if not a finite number."""
    return f"{int(value):,}" if isinstance(value, (int, float)) and math.isfinite(value) else "—"


def fmt_ms(seconds: Any) -> str:
    """Seconds as milliseconds: two decimals below 100 ms, else whole ms with separators; else an em dash."""
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "—"
    ms = seconds * 1000
    return f"{ms:.2f}" if ms < 100 else f"{ms:,.0f}"


def fmt_number(value: float) -> str:
    """Compact axis label: 1k, 2.5M, 0.001."""
    if value == 0:
        return "0"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:.3g}"


def numbers(layers: list[dict[str, Any]], key: str) -> list[float | None]:
    """``layer[key]`` of each layer as a float, or None where it is missing, not a number or not finite."""
    out: list[float | None] = []
    for layer in layers:
        value = layer.get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        out.append(float(value) if ok else None)
    return out


def data_uri(frame: Path | np.ndarray) -> str:
    """One frame (a PNG file, or an (H, W, 3) uint8 array) as a JPEG data URI (quality 80): the same
    string for a frame's array and its PNG file."""
    buffer = io.BytesIO()
    if isinstance(frame, np.ndarray):
        Image.fromarray(frame).save(buffer, "JPEG", **_JPEG_OPTIONS)
    else:
        with Image.open(frame) as img:
            img.convert("RGB").save(buffer, "JPEG", **_JPEG_OPTIONS)
    return f"data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def encode_frames(frames: Sequence[Path] | np.ndarray, encoded: Sequence[str] | None = None) -> list[str]:
    """Every frame of one normalisation as a data URI, in order (``encoded``: those URIs already made,
    one per frame, returned as they are)."""
    if encoded is not None and len(encoded) == len(frames):
        return list(encoded)
    # Pillow releases the GIL while encoding, so threads use every core.
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        return list(pool.map(data_uri, frames))


def id_prefix(inline: bool) -> str:
    """A random element-id prefix for a report shown inline (several on one notebook page), else ``""``."""
    return f"camanim-{secrets.token_hex(4)}-" if inline else ""


def page(title: str, body: str) -> str:
    """A complete HTML document: ``title`` (escaped), the report's style sheet and ``body`` (markup, as is)."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{PAGE_STYLE}{STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )


@dataclass(frozen=True)
class Sheet:
    """Every frame of one normalisation tiled into one image (a contact sheet), as a data URI.

    Tile ``i`` is at column ``i % cols``, row ``i // cols``; each tile is ``tile`` = (height, width) px.
    """

    uri: str
    cols: int
    rows: int
    tile: tuple[int, int]


def contact_sheet(frames: Sequence[Path] | np.ndarray, width: int = 96, quality: int = 60) -> Sheet:
    """The frames (L of (H, W, 3) uint8, or PNG files) as one JPEG sheet, each tile at most ``width`` px wide.

    One image instead of L: a notebook cell stays small (a few kB per layer) and shows every layer
    as a static picture where no script runs (an untrusted notebook, a static viewer).

    Raises:
        ValueError: no frames.
    """
    if len(frames) == 0:
        raise ValueError("contact_sheet: no frames")
    arrays = [f if isinstance(f, np.ndarray) else np.asarray(Image.open(f).convert("RGB")) for f in frames]
    h, w = arrays[0].shape[:2]
    tw = min(w, width)
    th = max(1, int(round(h * tw / w)))
    n = len(arrays)
    cols = max(1, min(n, int(math.ceil(math.sqrt(n * th / tw)))))
    rows = int(math.ceil(n / cols))
    sheet = np.full((rows * th, cols * tw, 3), 24, np.uint8)
    for i, a in enumerate(arrays):
        if a.shape[:2] != (th, tw):
            a = np.asarray(Image.fromarray(a).resize((tw, th), Image.Resampling.BILINEAR))
        r, c = divmod(i, cols)
        sheet[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = a
    buffer = io.BytesIO()
    Image.fromarray(sheet).save(buffer, "JPEG", quality=quality)  # JPEG: a few times faster than WebP here
    uri = f"data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"
    return Sheet(uri=uri, cols=cols, rows=rows, tile=(th, tw))
