"""Peak memory of a whole all-layer ``camanim run`` against its floor, a plain forward + backward (issue 15, goal 1).

For each model (``--weights none``, ``sample:cat`` at the given input size), fresh ``python``
processes, each under ``/usr/bin/time -f %M`` (the peak resident set size of the process, in KiB),
interleaved round by round so all see the same machine:

* ``floor``: ``python -c`` that imports camanim, loads the model, prepares the image and runs one
  forward and one backward of the predicted class's logit to the input (``torch.autograd.grad``),
  so every activation the backward needs is held at once, as in the run's traced pass;
* ``run``: the whole job, ``camanim run --model M --weights none --input-size N --layers all --quiet
  --out DIR``: Grad-CAM on every layer, local and global frames as PNG, three MP4s, ``cams.npz``,
  manifest, ``report.html``;
* ``run (before)``: the same with the tree in ``--before`` (optional), for a change's before/after.

Reported: each job's peak RSS (MiB; the largest over ``--runs`` rounds) and its ratio to the floor
(the goal: at most 1.25), the run's wall seconds, and with ``--check-same`` whether ``before`` and
``after`` wrote the same run (``scripts/same_run.py``: ``cams.npz`` byte for byte, every frame's pixels).

Run from the repository root:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_memory.py --models densenet161:224
    git archive BASE src | tar -x -C /tmp/before
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_memory.py --models densenet161:224 --before /tmp/before/src
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FLOOR = """
import sys, torch, camanim
from camanim.sources import prepare_input
size = int(sys.argv[2])
loaded = camanim.load_model(sys.argv[1], weights="none", input_size=(size, size))
x = prepare_input("sample:cat", None, loaded)[0].requires_grad_(True)
logits = loaded.module(x)
torch.autograd.grad(logits[0, int(logits[0].argmax())], x)
print(tuple(x.shape))
"""


def peak(cmd: list[str], src: Path) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of one process running ``cmd`` on the package in ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src.resolve())}
    with tempfile.NamedTemporaryFile("r", suffix=".time") as out:
        t0 = time.perf_counter()
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out.name, *cmd], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        kib = int(out.read().strip().splitlines()[-1])
    return kib / 1024, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="densenet161:224", help="MODEL:SIZE[,MODEL:SIZE...]")
    ap.add_argument("--before", type=Path, default=None, help="src/ folder of the tree before a change")
    ap.add_argument("--after", type=Path, default=ROOT / "src", help="src/ folder of the tree after")
    ap.add_argument("--runs", type=int, default=1, help="rounds of the jobs (the largest peak is kept)")
    ap.add_argument("--check-same", action="store_true", help="compare the before and after run folders")
    ap.add_argument("--keep", type=Path, default=None, help="write the run folders here (else a temporary folder)")
    args = ap.parse_args()
    print(f"$ OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python {' '.join(sys.argv)}")
    print(f"load at the start: {os.getloadavg()}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for spec in args.models.split(","):
            model, size = spec.split(":")
            jobs = {"floor": (args.after, [sys.executable, "-c", FLOOR, model, size])}
            runs = {"run": args.after}
            if args.before is not None:
                runs["run (before)"] = args.before
            for name, src in runs.items():
                out = work / f"{model}-{size}-{'before' if 'before' in name else 'after'}"
                jobs[name] = (src, [sys.executable, "-m", "camanim", "run", "--model", model, "--weights", "none",
                                    "--input-size", size, "--layers", "all", "--quiet", "--out", str(out)])
            peaks: dict[str, float] = {}
            walls: dict[str, float] = {}
            names = list(jobs)
            for r in range(args.runs):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    src, cmd = jobs[name]
                    mib, wall = peak(cmd, src)
                    peaks[name] = max(peaks.get(name, 0.0), mib)
                    walls[name] = wall
                    print(f"{model}:{size} round {r}: {name}: {mib:,.0f} MiB peak, {wall:.1f} s "
                          f"(load {os.getloadavg()[0]:.1f})", flush=True)
            for name in names:
                rows.append((model, size, name, peaks[name], peaks[name] / peaks["floor"], walls[name]))
            if args.check_same and args.before is not None:
                res = subprocess.run([sys.executable, str(ROOT / "scripts" / "same_run.py"),
                                      str(work / f"{model}-{size}-before"), str(work / f"{model}-{size}-after")],
                                     capture_output=True, text=True)
                print(f"{model}:{size} before vs after: {'same' if res.returncode == 0 else 'DIFFERENT'}: "
                      f"{res.stdout.strip()}", flush=True)
        print()
        print("| model | input | job | peak RSS (MiB) | / floor | wall s |")
        print("|---|---:|---|---:|---:|---:|")
        for model, size, name, mib, ratio, wall in rows:
            print(f"| {model} | {size} | {name} | {mib:,.0f} | **{ratio:.2f}** | {wall:.1f} |")
        print(f"\nload at the end: {os.getloadavg()}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
