"""Sweep speed, side by side in one run on the same images and settings:

(a) a shell loop of ``camanim run IMAGE --road --no-video --quiet`` over the images (one process per image:
    Python, torch and the model loaded every time);
(b) ``camanim sweep`` on the local pool with 1 worker and (c) with 2 workers (each worker loads the
    model once); one torch thread per worker, as the loop's processes get with OMP_NUM_THREADS=1;
(d) the same sweep on Ray with 2 actors (a local Ray started before the clock, as a running cluster
    would be), against (c): Ray's overhead;
(e) per image: the sweep item's own seconds (images table) against the same image's ``camanim run --road``.

Run from the repository root (the default model with every layer costs about 2 minutes per image on
one core; ``--layers`` and ``--road-trials`` make a smaller job, stated in the output):

    .venv/bin/python benchmarks/bench_sweep.py --images 3 --layers 'blocks.6*,conv_head,bn2' --road-trials 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from camanim.sources.images import SAMPLES  # noqa: E402
from camanim.sweep import read_table  # noqa: E402

CAMANIM = [sys.executable, "-m", "camanim.cli"]


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=len(SAMPLES), help="how many built-in samples [all]")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--layers", default="all")
    ap.add_argument("--road-trials", default="3")
    ap.add_argument("--no-ray", action="store_true", help="leave out (d)")
    args = ap.parse_args()
    images = [f"sample:{k}" for k in list(SAMPLES)[: args.images]]
    cores = os.cpu_count() or 1
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    common = ["--model", args.model, "--layers", args.layers, "--road-trials", args.road_trials]
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    try:
        loop = []
        for i, image in enumerate(images):
            loop.append(_timed([*CAMANIM, "run", image, *common, "--road", "--no-video", "--quiet",
                                "--out", str(tmp / f"run{i}")], env))
        timings = {"shell loop of camanim run --road --no-video": sum(loop)}
        item_seconds = {}
        for workers in (1, 2):
            out = tmp / f"pool{workers}"
            timings[f"sweep, local pool, {workers} worker(s)"] = _timed(
                [*CAMANIM, "sweep", *images, *common, "--workers", str(workers), "--threads", "1", "--quiet",
                 "--out", str(out)], env)
            if workers == 1:
                item_seconds = {r["image"]: r["seconds"] for r in read_table(out, "images").to_pylist()}
        if not args.no_ray:
            import ray

            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            from camanim.road import RoadOptions
            from camanim.sweep import SweepOptions, SweepSettings, run_sweep

            settings = SweepSettings(methods=("gradcam",), cam={"layers": args.layers},
                                     road=RoadOptions(trials=int(args.road_trials)), weights="default")
            t0 = time.perf_counter()
            run_sweep(images, tmp / "ray2", settings, SweepOptions(models=(args.model,), workers=2, threads=1, ray="auto"))
            timings["sweep, Ray, 2 actors (cluster running)"] = time.perf_counter() - t0
            ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"# bench_sweep: {len(images)} images ({', '.join(images)}), model {args.model}, --layers "
          f"'{args.layers}', --road-trials {args.road_trials}, {cores} cores\n")
    base = timings["shell loop of camanim run --road --no-video"]
    print("| job | seconds | per image | vs shell loop |\n|---|---:|---:|---:|")
    for name, sec in timings.items():
        print(f"| {name} | {sec:.1f} | {sec / len(images):.1f} | {base / sec:.2f}x |")
    pool2 = timings.get("sweep, local pool, 2 worker(s)")
    ray2 = timings.get("sweep, Ray, 2 actors (cluster running)")
    if pool2 and ray2:
        print(f"\nRay overhead against the local pool (2 workers each): {100 * (ray2 / pool2 - 1):+.1f}%")
    print("\n| image | camanim run --road (process) | sweep item (in a warm worker) | ratio |\n|---|---:|---:|---:|")
    for image, sec in zip(images, loop, strict=True):
        item = item_seconds.get(image)
        if item:
            print(f"| {image} | {sec:.1f} | {item:.1f} | {sec / item:.2f}x |")
    print("\n" + json.dumps({"timings": timings, "loop": loop, "items": item_seconds}))


if __name__ == "__main__":
    main()
