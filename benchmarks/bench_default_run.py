"""The default run against its floor: whole ``camanim`` next to importing camanim, loading the model and
one forward + backward, in one run, as fresh processes.

Jobs (each a fresh ``python`` process, interleaved round by round so all see the same machine state):

* ``floor``: ``python -c`` that imports camanim, loads the default model
  (``camanim.load_model("efficientnet_lite0")``), reads and prepares ``sample:cat`` and runs one
  forward and one backward of the predicted class's logit (``torch.autograd.grad`` to the input);
* ``camanim``: the whole default run, ``camanim --quiet --out DIR`` (Grad-CAM on every layer, local
  and global frames as PNG, three MP4s, ``cams.npz``, manifest, report);
* ``camanim (before)``: the same with the tree in ``--before`` (optional), for a change's before/after.

Reported: median wall and CPU (user + system of the child) seconds per job, and each ``camanim``
job's ratio to the floor (the goal: at most 2). With ``--check-same``, the run folders of
``before`` and ``after`` are compared frame for frame (PNG pixels) and video for video (decoded
frames): a speed-up must not change a pixel.

Run from the repository root:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_default_run.py --runs 3
    git archive BASE src | tar -x -C /tmp/before
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_default_run.py --before /tmp/before/src --runs 3 --check-same
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

FLOOR = """
import torch, camanim
from camanim.sources import prepare_input
loaded = camanim.load_model("efficientnet_lite0")
x = prepare_input("sample:cat", None, loaded)[0].requires_grad_(True)
logits = loaded.module(x)
torch.autograd.grad(logits[0, int(logits[0].argmax())], x)
"""


def timed(cmd: list[str], src: Path) -> tuple[float, float]:
    """(wall, child CPU) seconds of one process running ``cmd`` on the package in ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src.resolve())}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def same_run(a: Path, b: Path) -> list[str]:
    """What differs between two default runs' frames (pixels) and videos (decoded frames)."""
    import imageio_ffmpeg
    from PIL import Image

    problems = []
    for norm in ("local", "global"):
        fa, fb = sorted((a / "frames" / norm).glob("*.png")), sorted((b / "frames" / norm).glob("*.png"))
        if [p.name for p in fa] != [p.name for p in fb]:
            problems.append(f"frames/{norm}: different files")
            continue
        for pa, pb in zip(fa, fb):
            if not np.array_equal(np.asarray(Image.open(pa)), np.asarray(Image.open(pb))):
                problems.append(f"frames/{norm}/{pa.name} differs")
    for video in sorted(p.name for p in a.glob("*.mp4")):
        ra, rb = imageio_ffmpeg.read_frames(str(a / video)), imageio_ffmpeg.read_frames(str(b / video))
        next(ra), next(rb)
        da, db = list(ra), list(rb)
        if da != db:
            problems.append(f"{video}: decoded frames differ ({len(da)} vs {len(db)} frames)")
    return problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, default=None, help="src/ folder of the tree before a change")
    ap.add_argument("--after", type=Path, default=ROOT / "src", help="src/ folder of the tree after")
    ap.add_argument("--runs", type=int, default=3, help="rounds of the jobs")
    ap.add_argument("--check-same", action="store_true", help="compare before and after frames and videos")
    args = ap.parse_args()
    print(f"$ OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python {' '.join(sys.argv)}")
    print(f"uptime load at the start: {os.getloadavg()}")
    work = Path(tempfile.mkdtemp(prefix="bench-default-run-"))
    jobs = {"floor": (args.after, [sys.executable, "-c", FLOOR]),
            "camanim": (args.after, [sys.executable, "-m", "camanim", "--quiet", "--out"])}
    if args.before is not None:
        jobs["camanim (before)"] = (args.before, [sys.executable, "-m", "camanim", "--quiet", "--out"])
    names = list(jobs)
    walls: dict[str, list[float]] = {n: [] for n in names}
    cpus: dict[str, list[float]] = {n: [] for n in names}
    try:
        for r in range(args.runs):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                src, cmd = jobs[name]
                if cmd[-1] == "--out":
                    cmd = [*cmd, str(work / f"{name.replace(' ', '_').replace('(', '').replace(')', '')}-{r}")]
                wall, cpu = timed(cmd, src)
                walls[name].append(wall)
                cpus[name].append(cpu)
                print(f"round {r}: {name}: {wall:.1f} s wall, {cpu:.1f} s CPU (load {os.getloadavg()[0]:.1f})",
                      flush=True)
        floor_w, floor_c = statistics.median(walls["floor"]), statistics.median(cpus["floor"])
        print()
        print(f"| job | wall s (median of {args.runs}) | CPU s | wall / floor | CPU / floor |")
        print("|---|---:|---:|---:|---:|")
        for name in names:
            w, c = statistics.median(walls[name]), statistics.median(cpus[name])
            print(f"| {name} | {w:.1f} | {c:.1f} | **{w / floor_w:.2f}** | **{c / floor_c:.2f}** |")
        print(f"\nuptime load at the end: {os.getloadavg()}")
        if args.check_same and args.before is not None:
            problems = same_run(work / "camanim-0", work / "camanim_before-0")
            print(f"before vs after, frames and videos: {'identical' if not problems else problems[:10]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
