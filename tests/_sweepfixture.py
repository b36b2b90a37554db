"""Shared sweep test helpers: a tiny setting (random resnet18 at 64x64, four layers, two methods, ROAD with
two trials at one percentage), its images with labels (one bad file, one missing), the numbers
computed in this process item by item (the reference), and one finished sweep on the local pool."""

from __future__ import annotations

import csv
import os
import socket
from pathlib import Path

from camanim.road import RoadOptions
from camanim.sweep import SweepSettings

MODEL = "resnet18"
LAYERS = "layer2.1.conv*,layer3.1.conv*"
SETTINGS = SweepSettings(methods=("gradcam", "layercam"), cam={"layers": LAYERS, "seed": 0},
                         road=RoadOptions(percentiles=(50,), trials=2, seed=0), weights="none",
                         input_size=(64, 64), threads=1)
CLI_ARGS = ["--model", MODEL, "--weights", "none", "--input-size", "64", "--layers", LAYERS,
            "--method", "gradcam,layercam", "--road-percentiles", "50", "--road-trials", "2"]
GOOD = ["sample:cat", "sample:coffee", "sample:rocket"]


def make_image_list(folder: Path, labels: dict[str, str]) -> Path:
    """A CSV list of the good images (with ``labels``), a corrupt file and a missing one."""
    folder.mkdir(parents=True, exist_ok=True)
    bad = folder / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    path = folder / "images.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        for image in GOOD:
            w.writerow([image, labels.get(image, "")])
        w.writerow(["corrupt.png", ""])
        w.writerow(["missing.png", ""])
    return path


def layer_values(rows: list[dict]) -> dict[tuple, tuple]:
    """``{(key, method, layer_index): (morf_trials, lerf_trials)}`` of layers rows: the numbers compared."""
    return {(r["key"], r["method"], r["layer_index"]): (r["morf_trials"], r["lerf_trials"]) for r in rows}


def reference_values(reference: dict) -> dict[tuple, tuple]:
    """The reference's layers rows, as :func:`layer_values`."""
    return layer_values([r for res in reference["rows"].values() for r in res["layers"]])


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def live_children() -> dict[int, list[int]]:
    """Every live (not zombie) process's pid, grouped by its parent's pid (read from /proc)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(name))
    return children
