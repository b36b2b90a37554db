"""ybROAD for a result in memory or a finished run folder (from its saved raw CAMs, never recomputed)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import InputError
from .road import YbRoad, write_ybroad
from .road import ybroad as _ybroad

ROAD_FILES = ("ybroad.csv", "ybroad.json", "ybroad.png")


def _default_batch(device: torch.device) -> int:
    # Measured on a 2-core CPU: ResNet50 is fastest per image at batch 2-8; GPUs like larger batches.
    return 32 if device.type == "cuda" else 8


def ybroad(result: Any, *, percentiles: Sequence[float] = (20, 40, 60, 80), score: str = "prob",
           noise: float = 0.01, seed: int = 0, trials: int = 1, batch_size: int | None = None,
           progress: Callable[[int, int], None] | None = None) -> YbRoad:
    """ybROAD of an :func:`camanim.animate` result: the ROAD score of every layer's CAM.

    Percentages are pixels *removed*; the score is the change of the target's softmax
    probability (``score="logit"`` for logits). See :mod:`camanim.road`.
    """
    if result.model is None:
        raise ValueError("this result has no model attached: pass the model to camanim.road.ybroad directly")
    x = result.input_tensor
    return _ybroad(
        result.model, x, result.cams.to(x.device), result.target.index,
        layer_names=[r.name for r in result.layers], non_spatial=[r.non_spatial for r in result.layers],
        percentiles=percentiles, score=score, noise=noise, seed=seed, trials=trials,
        batch_size=batch_size or _default_batch(x.device), output_key=result.options.get("output_key"),
        progress=progress,
    )


def _rebuild_model(manifest: dict[str, Any], trust_checkpoint: bool) -> nn.Module:
    from .sources import load_model

    spec = manifest.get("model", {}).get("spec")
    if not spec:
        raise InputError("this run's model was a Python nn.Module, not a name: score it with "
                         "camanim.ybroad(result) in Python")
    return load_model(spec["name"], spec["weights"], num_classes=spec.get("num_classes"),
                      channels=spec.get("channels"), trust_checkpoint=trust_checkpoint).module


def road_for_run(out_dir: str | Path, *, model: nn.Module | None = None, trust_checkpoint: bool = False,
                 device: str | torch.device | None = None, **options: Any) -> tuple[YbRoad, dict[str, Path]]:
    """Score a finished run folder with ybROAD and link the results from its manifest and report.

    The CAMs and the model input come from ``cams.npz``; the model is rebuilt from the
    manifest unless given. Files are written next to the run's others only when all are done.
    """
    out = Path(out_dir)
    mpath, cpath = out / "manifest.json", out / "cams.npz"
    if not mpath.is_file() or not cpath.is_file():
        raise InputError(f"'{out}' is not a camanim run folder (no manifest.json/cams.npz): give the --out of a run")
    manifest = json.loads(mpath.read_text())
    data = np.load(cpath)
    mod = model if model is not None else _rebuild_model(manifest, trust_checkpoint)
    dev = torch.device(device) if device else next((p.device for p in mod.parameters()), torch.device("cpu"))
    mod = mod.to(dev)
    x = torch.from_numpy(data["input"]).to(dev)
    cams = torch.from_numpy(data["cams"]).to(dev)
    layers = manifest["layers"]
    options.setdefault("batch_size", _default_batch(dev))
    options.setdefault("output_key", manifest.get("options", {}).get("output_key"))
    yb = _ybroad(mod, x, cams, int(data["target"]), layer_names=[layer["name"] for layer in layers],
                 non_spatial=[bool(layer.get("non_spatial")) for layer in layers], **options)
    tmp = Path(tempfile.mkdtemp(prefix=".ybroad-", dir=out))
    try:
        written = write_ybroad(tmp, yb)
        best = yb.ybroad_max
        manifest["ybroad"] = {
            "csv": "ybroad.csv", "json": "ybroad.json", "png": "ybroad.png",
            "max": None if best is None else {"value": best.value, "index": best.index, "name": best.name},
            "mean": None if not np.isfinite(yb.ybroad_mean) else float(yb.ybroad_mean),
            "percentiles": list(yb.percentiles), "score": yb.score, "trials": yb.trials, "seed": yb.seed,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        for name in ROAD_FILES:
            os.replace(written[name.split(".")[1]], out / name)
        os.replace(tmp / "manifest.json", mpath)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    from .report import build_report

    paths = {name.split(".")[1]: out / name for name in ROAD_FILES}
    paths["report"] = build_report(out)
    return yb, paths
