"""The default run's ``--road`` stage, before and after a change, side by side in one run.

The default run (EfficientNet-Lite0 on ``sample:cat``, Grad-CAM, every layer) is made once with the
tree after (``camanim --out RUN``); then its ROAD stage, ``camanim road RUN`` (model rebuilt, CAMs
from ``cams.npz``, ybROAD scored, files and report written: what ``--road`` adds to the run), is
timed as a fresh process per job on copies of that folder, the jobs interleaved round by round
(A B C, B C A, ...) so all see the same machine state. Jobs:

* ``before``: the tree before, with its default settings (in the round that added the chance baseline:
  one trial and no baseline; since then the same defaults as after, so its scores equal ``after, default``'s);
* ``after, 1 trial``: the tree after with ``--road-trials 1`` (one trial plus the baseline's one ranking);
* ``after, default``: the tree after with its default trials.

Reported: the median wall and CPU time (the process's user + system) per job and their ratios to
``before``; the largest score difference between ``before`` and ``after, 1 trial`` and between
``before`` and ``after, default`` (same seed: equal settings give the same numbers, up to float32
rounding of the forwards).

Run from the repository root, with the tree before the change exported elsewhere:

    git archive BASE src | tar -x -C /tmp/before
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_road_default.py --before /tmp/before/src --runs 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def camanim(src: Path, *args: str) -> float:
    """Wall seconds of one ``python -m camanim ARGS`` on the package in ``src`` (its CPU seconds, user +
    system, are added to :data:`CPU` under the same arguments' job)."""
    env = {**os.environ, "PYTHONPATH": str(src.resolve())}
    t0 = time.perf_counter()
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "camanim", *args], env=env, check=True, stdout=subprocess.DEVNULL)
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(done.ru_utime + done.ru_stime - used.ru_utime - used.ru_stime)
    return time.perf_counter() - t0


#: CPU seconds of each finished ``camanim`` process, in order
CPU: list[float] = []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="src/ folder of the tree before")
    ap.add_argument("--after", type=Path, default=ROOT / "src", help="src/ folder of the tree after")
    ap.add_argument("--runs", type=int, default=2, help="rounds of the three jobs")
    ap.add_argument("--run", type=Path, default=None, help="reuse this default run folder (no --road) instead")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-road-default-"))
    try:
        base = args.run
        if base is None:
            base = work / "run"
            made = camanim(args.after, "--quiet", "--no-video", "--out", str(base))
            print(f"default run (no --road, no video): {made:.1f} s")
        jobs = {
            "before": (args.before, []),
            "after, 1 trial": (args.after, ["--road-trials", "1"]),
            "after, default": (args.after, []),
        }
        names = list(jobs)
        times: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for r in range(args.runs):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                src, extra = jobs[name]
                folder = work / f"{name.replace(', ', '-').replace(' ', '_')}-{r}"
                shutil.copytree(base, folder)
                times[name].append(camanim(src, "road", str(folder), "--quiet", *extra))
                cpu[name].append(CPU[-1])
                print(f"round {r}: {name}: {times[name][-1]:.1f} s, CPU {cpu[name][-1]:.1f} s", flush=True)
        ref = statistics.median(times["before"])
        print()
        ref_cpu = statistics.median(cpu["before"])
        print(f"| job | wall s (median of {args.runs}) | / before | CPU s (median) | / before |")
        print("|---|---|---|---|---|")
        for name in names:
            med, med_cpu = statistics.median(times[name]), statistics.median(cpu[name])
            print(f"| {name} | {med:.1f} | **{med / ref:.2f}** | {med_cpu:.1f} | **{med_cpu / ref_cpu:.2f}** |")
        before = json.loads((work / "before-0" / "ybroad.json").read_text())
        after = json.loads((work / "after-1_trial-0" / "ybroad.json").read_text())
        diffs = [abs(a["ybroad"] - b["ybroad"]) for a, b in zip(before["layers"], after["layers"], strict=True)
                 if a["ybroad"] is not None and b["ybroad"] is not None]
        print(f"\nbefore vs after (1 trial): {len(diffs)} layers scored by both, max |difference| "
              f"{max(diffs, default=0.0):.3g}")
        default = json.loads((work / "after-default-0" / "ybroad.json").read_text())
        same = [abs(a["ybroad"] - b["ybroad"]) for a, b in zip(before["layers"], default["layers"], strict=True)
                if a["ybroad"] is not None and b["ybroad"] is not None]
        print(f"before vs after (default): {len(same)} layers scored by both, max |difference| "
              f"{max(same, default=0.0):.3g} (the same settings when both trees have the same defaults)")
        print(f"after, default: trials {default['trials']}; {default['statement']}")
        for w in default.get("warnings", []):
            print(f"  warning: {w}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
