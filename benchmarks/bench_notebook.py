"""The notebook view of the default run: size and build time of ``result._repr_html_()``.

    .venv/bin/python benchmarks/bench_notebook.py [--before OLD/src] [--repeats 3]

Runs ``camanim.animate`` on ``sample:cat`` with the default model once, then builds the notebook
HTML ``--repeats`` times and prints the size (MB) and the median build time. With ``--before``, the
same in a subprocess on another checkout's ``src`` (side by side, same machine, same moment).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def measure(repeats: int) -> dict[str, float]:
    import camanim

    result = camanim.animate(image="sample:cat")
    times, size = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        text = result._repr_html_()
        times.append(time.perf_counter() - t0)
        size = len(text.encode("utf-8"))
    return {"layers": len(result.layers), "mb": size / 1e6, "seconds": statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", help="another checkout's src folder, measured the same way")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.json:
        print(json.dumps(measure(args.repeats)))
        return
    rows = []
    for label, src in (("before", args.before), ("after", None)):
        if label == "before" and not src:
            continue
        env = dict(os.environ)
        if src:
            env["PYTHONPATH"] = src
        out = subprocess.run([sys.executable, __file__, "--json", "--repeats", str(args.repeats)], env=env,
                             check=True, capture_output=True, text=True).stdout
        rows.append((label, json.loads(out.strip().splitlines()[-1])))
    print("| | layers | _repr_html_ MB | build s (median) |\n|---|---|---|---|")
    for label, r in rows:
        print(f"| {label} | {r['layers']} | {r['mb']:.2f} | {r['seconds']:.2f} |")


if __name__ == "__main__":
    main()
