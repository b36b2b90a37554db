"""A synthetic run folder that follows the engine's output contract.

The report only reads what a run leaves on disk, so its tests do not need a
model: ``make_run_dir`` writes a manifest, one solid-coloured frame per layer
and normalisation (so a test can tell from the pixels which frame is shown),
raw CAMs and, optionally, ``ybroad.json``.
"""

from __future__ import annotations

import colorsys
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

NORMALISATIONS = ("local", "global")

# A small ResNet-like sequence; names repeat on purpose (``#2`` marks a module's
# second call) because the report must keep such records apart.
_DEFAULT_LAYERS = [
    ("conv1", "Conv2d", 64, 2, 9408),
    ("bn1", "BatchNorm2d", 64, 2, 128),
    ("relu", "ReLU", 64, 2, 0),
    ("layer1.0.conv1", "Conv2d", 64, 4, 36864),
    ("layer1.0.relu", "ReLU", 64, 4, 0),
    ("layer1.0.relu#2", "ReLU", 64, 4, 0),
    ("layer2.0.conv1", "Conv2d", 128, 8, 73728),
    ("layer2.0.downsample.0", "Conv2d", 128, 8, 8192),
    ("layer3.0.conv1", "Conv2d", 256, 16, 294912),
    ("layer4.0.conv1", "Conv2d", 512, 32, 1179648),
]


def frame_colour(norm: str, index: int) -> tuple[int, int, int]:
    """The solid RGB colour of frame ``index`` of normalisation ``norm``.

    Hues follow the golden angle so neighbouring layers differ strongly; global
    frames are darker than local ones, as global normalisation attenuates.
    """
    hue = (index * 0.618033988749895) % 1.0
    value = 0.95 if norm == "local" else 0.5
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
    return round(r * 255), round(g * 255), round(b * 255)


def ybroad_values(n_layers: int) -> list[float | None]:
    """The synthetic ybROAD curve: peaks at layer ``(2 * n) // 3``; the last layer is undefined."""
    best = (2 * n_layers) // 3
    values: list[float | None] = [round(0.5 - 0.04 * abs(i - best), 6) for i in range(n_layers)]
    if n_layers > 2:
        values[-1] = None  # the classifier layer: non-spatial, ROAD undefined
    return values


def _layer_records(n_layers: int, names: Sequence[str] | None) -> list[dict]:
    records = []
    for i in range(n_layers):
        name, kind, channels, stride, params = _DEFAULT_LAYERS[i % len(_DEFAULT_LAYERS)]
        if i >= len(_DEFAULT_LAYERS):
            name = f"{name}#{i // len(_DEFAULT_LAYERS) + 1}"
        last = i == n_layers - 1 and n_layers > 2
        if last:
            name, kind, params = "fc", "Linear", 513000
        if names is not None:
            name = names[i]
        side = max(1, 112 // stride)
        records.append(
            {
                "index": i,
                "name": name,
                "module": name.split("#")[0],
                "type": kind,
                "shape": [1, 1000] if last else [1, channels, side, side],
                "layout": "NC" if last else "NCHW",
                "params": params,
                "seconds": round(0.0005 * (i % 4 + 1), 6),
                "non_spatial": last,
            }
        )
    return records


def make_run_dir(
    path: str | Path,
    n_layers: int = 5,
    names: Sequence[str] | None = None,
    with_ybroad: bool = True,
    *,
    size: tuple[int, int] = (96, 80),
    model: str = "resnet_tiny",
    method: str = "gradcam",
) -> Path:
    """Write a contract-conforming run folder at ``path`` and return it.

    Args:
        path: folder to create (parents too).
        n_layers: number of layer records and frames per normalisation.
        names: layer names to use instead of the defaults (length ``n_layers``).
        with_ybroad: also write ``ybroad.json`` and list it in the manifest.
        size: frame size as (width, height).
        model: model name written to the manifest.
        method: CAM method written to the manifest.
    """
    if names is not None and len(names) != n_layers:
        raise ValueError(f"names has {len(names)} entries, expected n_layers={n_layers}")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    layers = _layer_records(n_layers, names)
    width, height = size

    for norm in NORMALISATIONS:
        folder = out / "frames" / norm
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n_layers):
            Image.new("RGB", (width, height), frame_colour(norm, i)).save(folder / f"{i:04d}.png")

    cams = np.stack([np.full((8, 8), i, dtype=np.float32) for i in range(n_layers)])
    np.savez(out / "cams.npz", cams=cams, names=np.array([rec["name"] for rec in layers]))

    manifest = {
        "model": {"name": model, "weights": f"{model}-weights", "num_classes": 1000},
        "image": {"source": "sample:cat", "size": [224, 224]},
        "method": method,
        "target": {"index": 285, "label": "Egyptian cat", "score": 0.77},
        "normalisations": list(NORMALISATIONS),
        "versions": {"camanim": "0.1.0", "torch": "2.14.1"},
        "frames": {"local": "frames/local", "global": "frames/global", "count": n_layers},
        "videos": {
            "local": "camanim_local.mp4",
            "global": "camanim_global.mp4",
            "side_by_side": "camanim_side_by_side.mp4",
        },
        "layers": layers,
    }

    if with_ybroad:
        manifest["ybroad"] = {"csv": "ybroad.csv", "json": "ybroad.json", "png": "ybroad.png"}
        (out / "ybroad.json").write_text(json.dumps(_ybroad(layers), indent=2), encoding="utf-8")

    (out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return out


def _ybroad(layers: list[dict]) -> dict:
    percentiles = [20, 40, 60, 80]
    values = ybroad_values(len(layers))
    entries = []
    for rec, value in zip(layers, values, strict=True):
        if value is None:
            curves = {"morf": [], "lerf": [], "combined": []}
        else:
            morf = [round(0.6 - 0.1 * k - value / 4, 6) for k in range(len(percentiles))]
            lerf = [round(m + value, 6) for m in morf]
            curves = {"morf": morf, "lerf": lerf, "combined": [round(value / 2, 6)] * len(percentiles)}
        entries.append(
            {
                "index": rec["index"],
                "name": rec["name"],
                "defined": value is not None,
                **curves,
                "ybroad": value,
                "ybroad_std": None if value is None else round(0.01 + 0.002 * math.sin(rec["index"]), 6),
            }
        )
    defined = [(v, i) for i, v in enumerate(values) if v is not None]
    best_value, best_index = max(defined, key=lambda pair: (pair[0], -pair[1]))
    return {
        "percentiles": percentiles,
        "percent_meaning": "pixels removed",
        "score": "prob",
        "noise": 0.01,
        "seed": 0,
        "trials": 3,
        "layers": entries,
        "ybroad_max": {"value": best_value, "index": best_index, "name": layers[best_index]["name"]},
        "ybroad_mean": round(sum(v for v, _ in defined) / len(defined), 6),
    }


def write_scored_ybroad(run: Path, *, probability: float = 0.6, num_classes: int = 10, trials: int = 3,
                        best: int = 2, alias: int | None = 3, note: int | None = 4) -> dict:
    """Score ``run`` with a synthetic, seeded :class:`camanim.road.YbRoad` (intervals, a chance baseline, an
    alias of ``best`` and a pass-through note) and write its ``ybroad.json`` and manifest ``same_as``.

    Layer ``best`` peaks at 0.3; ``alias`` (if any) shares its output (``same_as``); the last layer is
    undefined; layer 1 sits inside the chance band. Returns the ``ybroad.json`` dict.
    """
    import torch

    from camanim.road import YbRoad

    manifest = json.loads((run / "manifest.json").read_text())
    layers = manifest["layers"]
    n = len(layers)
    g = torch.Generator().manual_seed(11)
    curve = torch.tensor([0.3 - 0.02 * abs(i - best) for i in range(n)], dtype=torch.float64)
    curve[1] = 0.0
    noise = 0.002 * torch.randn(trials, n, 2, generator=g, dtype=torch.float64)
    morf = -0.2 - curve.view(1, n, 1) + noise
    lerf = -0.2 + curve.view(1, n, 1) + noise.flip(0)
    same_as: list[int | None] = [None] * n
    if alias is not None:
        same_as[alias] = best
        morf[:, alias], lerf[:, alias] = morf[:, best], lerf[:, best]
        layers[alias]["same_as"] = best
    defined = torch.ones(n, dtype=torch.bool)
    defined[-1] = False
    morf[:, -1] = lerf[:, -1] = float("nan")
    notes: list[str | None] = [None] * n
    if note is not None:
        notes[note] = "BatchNorm output, before activation"
    result = YbRoad(percentiles=(20.0, 60.0), score="logit", noise=0.01, seed=0, trials=trials,
                    layer_names=[layer["name"] for layer in layers], morf=morf, lerf=lerf, combined=(lerf - morf) / 2,
                    defined=defined, baseline_morf=-0.2 + 0.01 * torch.randn(trials, 2, generator=g, dtype=torch.float64),
                    baseline_lerf=-0.2 + 0.01 * torch.randn(trials, 2, generator=g, dtype=torch.float64),
                    same_as=same_as, notes=notes, target_probability=probability, num_classes=num_classes)
    data = result.to_json_dict()
    (run / "ybroad.json").write_text(json.dumps(data), encoding="utf-8")
    manifest["ybroad"] = {"csv": "ybroad.csv", "json": "ybroad.json", "png": "ybroad.png"}
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return data
