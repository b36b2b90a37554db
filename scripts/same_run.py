"""Check two run folders hold the same result: every ``cams.npz`` array byte for byte, every frame
pixel for pixel (decoded PNGs), and the same manifest apart from timings and versions.

    python scripts/same_run.py RUN_A RUN_B      # exit 0 when the same, 1 with the differences listed
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

VOLATILE = {"seconds", "versions"}


def _manifest(folder: Path) -> dict:
    m = json.loads((folder / "manifest.json").read_text())
    for key in VOLATILE:
        m.pop(key, None)
    for layer in m.get("layers", []):
        layer.pop("seconds", None)
    return m


def compare(a: Path, b: Path) -> list[str]:
    problems: list[str] = []
    za, zb = np.load(a / "cams.npz"), np.load(b / "cams.npz")
    if sorted(za.files) != sorted(zb.files):
        problems.append(f"cams.npz arrays differ: {sorted(za.files)} vs {sorted(zb.files)}")
    for key in za.files:
        x, y = za[key], zb[key]
        if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
            problems.append(f"cams.npz[{key}] differs ({x.dtype}{x.shape} vs {y.dtype}{y.shape})")
    frames_a = sorted(p.relative_to(a) for p in (a / "frames").rglob("*.png"))
    frames_b = sorted(p.relative_to(b) for p in (b / "frames").rglob("*.png"))
    if frames_a != frames_b:
        problems.append(f"frame files differ: {len(frames_a)} vs {len(frames_b)}")
    for rel in frames_a:
        if (b / rel).is_file() and not np.array_equal(np.asarray(Image.open(a / rel)), np.asarray(Image.open(b / rel))):
            problems.append(f"frame {rel} differs")
    if _manifest(a) != _manifest(b):
        problems.append("manifest.json differs (beyond seconds and versions)")
    print(f"cams.npz arrays: {len(za.files)}, frames: {len(frames_a)}, problems: {len(problems)}")
    return problems


if __name__ == "__main__":
    found = compare(Path(sys.argv[1]), Path(sys.argv[2]))
    for line in found:
        print(line)
    sys.exit(1 if found else 0)
