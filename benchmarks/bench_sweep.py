"""Sweep speed, side by side in one run on the same images and settings, every job a fresh ``camanim``
process as a user would start it (one torch thread per process or worker):

(a) a shell loop of ``camanim run IMAGE --road --no-video --quiet`` over the images (Python, torch and the
    model loaded for every image);
(b) ``camanim sweep`` on the local pool with 1 worker, and with 2 workers (each worker loads the model once);
(c) ``camanim sweep --ray 127.0.0.1:PORT`` with 2 actors on a local two-CPU Ray cluster started before the
    clock (``ray start --head --block``, on 127.0.0.1 only, its own temp dir and token), as a running
    cluster would be: Ray's overhead against (b) with 2 workers. The 2-worker pool and Ray runs alternate
    (pool, Ray, pool, Ray, ...: ``--repeat``) so that a change of the machine's load falls on both;
    the ratio is the median of the pairs';
(d) per image: the sweep item's own seconds (the 1-worker sweep's images table) against the same
    image's ``camanim run --road`` process in (a).

Run from the repository root (the default model with every layer costs about 2 minutes per image on
one core; ``--layers``, ``--road-percentiles`` and ``--road-trials`` make a smaller job, stated in the output):

    .venv/bin/python benchmarks/bench_sweep.py --images 3 --layers 'blocks.5.3*,conv_head' \\
        --road-percentiles 50 --road-trials 1 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
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
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t0


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _ray_head(tmp: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """A local Ray head with 2 CPUs on 127.0.0.1 only, in its own process group; returns it and its address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp / "ray-head.log"
    with log.open("wb") as f:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", "--head", f"--port={port}",
                                 "--node-ip-address=127.0.0.1", "--num-cpus=2", "--include-dashboard=false",
                                 "--disable-usage-stats", f"--temp-dir={tmp / 'ray'}", "--block"],
                                env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while "Ray runtime started" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"Ray did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.5)
    return proc, f"127.0.0.1:{port}"


def _stop(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=10)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=len(SAMPLES), help="how many built-in samples [all]")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--layers", default="all")
    ap.add_argument("--road-percentiles", default="20,40,60,80")
    ap.add_argument("--road-trials", default="3")
    ap.add_argument("--repeat", type=int, default=2, help="alternating 2-worker pool / Ray runs [2]")
    ap.add_argument("--no-ray", action="store_true", help="leave out (c)")
    args = ap.parse_args()
    images = [f"sample:{k}" for k in list(SAMPLES)[: args.images]]
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    token = tmp / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token)}
    env.pop("RAY_AUTH_TOKEN", None)
    common = ["--model", args.model, "--layers", args.layers, "--road-percentiles", args.road_percentiles,
              "--road-trials", args.road_trials]
    loads = {"start": _load()}
    head = None
    try:
        loop = [_timed([*CAMANIM, "run", image, *common, "--road", "--no-video", "--quiet", "--out",
                        str(tmp / f"run{i}")], env) for i, image in enumerate(images)]
        timings = {"shell loop of camanim run --road --no-video": sum(loop)}

        def sweep(name: str, *extra: str) -> float:
            return _timed([*CAMANIM, "sweep", *images, *common, *extra, "--threads", "1", "--quiet",
                           "--out", str(tmp / name)], env)

        timings["sweep, local pool, 1 worker"] = sweep("pool1", "--workers", "1")
        item_seconds = {r["image"]: r["seconds"] for r in read_table(tmp / "pool1", "images").to_pylist()}
        pairs: list[tuple[float, float]] = []
        if not args.no_ray:
            head, address = _ray_head(tmp, env)
            loads["ray started"] = _load()
        for k in range(args.repeat):
            pool = sweep(f"pool2-{k}", "--workers", "2")
            ray = sweep(f"ray2-{k}", "--workers", "2", "--ray", address) if head else float("nan")
            pairs.append((pool, ray))
        timings["sweep, local pool, 2 workers (median)"] = statistics.median(p for p, _ in pairs)
        if head:
            timings["sweep, Ray, 2 actors, cluster running (median)"] = statistics.median(r for _, r in pairs)
        loads["end"] = _load()
    finally:
        if head is not None:
            _stop(head)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"# bench_sweep: {len(images)} images ({', '.join(images)}), model {args.model}, --layers "
          f"'{args.layers}', --road-percentiles {args.road_percentiles}, --road-trials {args.road_trials}, "
          f"{os.cpu_count()} cores; load average (1, 5, 15 min): " + "; ".join(f"{k} {v}" for k, v in loads.items())
          + "\n")
    base = timings["shell loop of camanim run --road --no-video"]
    print("| job | seconds | per image | loop / job |\n|---|---:|---:|---:|")
    for name, sec in timings.items():
        print(f"| {name} | {sec:.1f} | {sec / len(images):.1f} | {base / sec:.2f}x |")
    if not args.no_ray:
        print("\n| pair | pool, 2 workers (s) | Ray, 2 actors (s) | Ray / pool |\n|---|---:|---:|---:|")
        for k, (pool, ray) in enumerate(pairs):
            print(f"| {k + 1} | {pool:.1f} | {ray:.1f} | {ray / pool:.3f} |")
        ratio = statistics.median(r / p for p, r in pairs)
        print(f"\nRay overhead against the local pool (2 workers each, median of the pairs): {100 * (ratio - 1):+.1f}%")
    print("\n| image | camanim run --road (its own process) | sweep item (in a warm worker) | run / item |\n"
          "|---|---:|---:|---:|")
    for image, sec in zip(images, loop, strict=True):
        item = item_seconds.get(image)
        if item:
            print(f"| {image} | {sec:.1f} | {item:.1f} | {sec / item:.2f}x |")
    print("\n" + json.dumps({"timings": timings, "loop": loop, "items": item_seconds, "pairs": pairs, "load": loads}))


if __name__ == "__main__":
    main()
