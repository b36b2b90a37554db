"""Before/after a refactor: the same CLI jobs run on two source trees, interleaved, side by side.

Each job runs as a fresh ``python -m camanim ...`` process under ``/usr/bin/time -f %M`` (peak
resident memory, KiB), alternating the trees (A B B A ...), so both see the same machine state;
medians of wall time and peak memory, and the ratio after / before. The outputs of the two trees
are compared too (``scripts/same_run.py``: ``cams.npz`` arrays byte for byte, frames pixel for pixel).

Run from the repository root, with the tree before the change checked out elsewhere:

    git worktree add /tmp/before <commit>
    .venv/bin/python benchmarks/bench_layout.py --before /tmp/before/src --after src --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOBS = {
    "default": ["--quiet"],  # EfficientNet-Lite0 on sample:cat, Grad-CAM, every layer, frames, 3 MP4s, report
    "road": ["--layers", "blocks.6*", "--road", "--quiet"],  # the --road path: score, then save once
    # the engine on a deeper network: ResNet50, every layer, one normalisation, no videos
    "resnet50": ["run", "sample:cat", "--model", "resnet50", "--weights", "none", "--norm", "local", "--no-video",
                 "--quiet"],
}


def run(src: Path, args: list[str], out: Path) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (KiB) and the engine's seconds (``manifest.json``'s ``seconds.cams``)
    of one CLI run on the package in ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src.resolve())}
    with tempfile.NamedTemporaryFile("r", suffix=".time") as peak:
        t0 = time.perf_counter()
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", peak.name, sys.executable, "-m", "camanim",
                        *args, "--out", str(out)], env=env, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        cams = json.loads((out / "manifest.json").read_text())["seconds"]["cams"]
        return wall, int(peak.read().strip().splitlines()[-1]), float(cams)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="src/ folder of the tree before")
    ap.add_argument("--after", type=Path, default=ROOT / "src", help="src/ folder of the tree after")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--jobs", default=",".join(JOBS))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-layout-"))
    try:
        print("| job | before: s, MiB, CAMs s | after: s, MiB, CAMs s | after / before: time, memory, CAMs "
              "| same outputs |")
        print("|---|---|---|---|---|")
        for job in args.jobs.split(","):
            times: dict[str, list[float]] = {"before": [], "after": []}
            peaks: dict[str, list[int]] = {"before": [], "after": []}
            engine: dict[str, list[float]] = {"before": [], "after": []}
            for i in range(args.runs):
                order = ("before", "after") if i % 2 == 0 else ("after", "before")
                for side in order:
                    src = args.before if side == "before" else args.after
                    wall, peak, cams = run(src, JOBS[job], work / f"{job}-{side}")
                    times[side].append(wall)
                    peaks[side].append(peak)
                    engine[side].append(cams)
            same = subprocess.run([sys.executable, str(ROOT / "scripts" / "same_run.py"), str(work / f"{job}-before"),
                                   str(work / f"{job}-after")], capture_output=True, text=True)
            tb, ta = statistics.median(times["before"]), statistics.median(times["after"])
            mb, ma = statistics.median(peaks["before"]) / 1024, statistics.median(peaks["after"]) / 1024
            cb, ca = statistics.median(engine["before"]), statistics.median(engine["after"])
            print(f"| {job} | {tb:.1f}, {mb:.0f}, {cb:.2f} | {ta:.1f}, {ma:.0f}, {ca:.2f} | "
                  f"**{ta / tb:.2f}**, **{ma / mb:.2f}**, **{ca / cb:.2f}** | "
                  f"{'yes' if same.returncode == 0 else 'NO: ' + same.stdout.strip().replace(chr(10), '; ')} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
