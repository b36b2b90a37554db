"""3-D Grad-CAM over every layer: camanim's single pass against pytorch-grad-cam layer by layer.

MONAI's 3-D DenseNet121 (``DenseNet121(spatial_dims=3, in_channels=1, out_channels=2)``, random
weights, seed 0) on a random ``--size``^3 volume (seed 0), every layer (``layers="all"``):

(a) camanim: ``camanim.animate(model, x, layers="all")``: one forward and one backward, every
    layer's raw 3-D Grad-CAM computed as its gradient arrives, upsampled trilinearly to the input
    volume (no frames or videos: the CAMs, as pytorch-grad-cam returns them);
(b) pytorch-grad-cam 1.5.7's ``GradCAM`` with ``target_layers=[module]``, called once per module that
    has a 3-D map (one forward and one backward per call, its cubic ``zoom`` to the input size),
    on ``--ref-layers`` modules evenly spaced through the network, timed, and extrapolated to
    every such module by the mean time per call (``--full-reference`` calls them all).

Both at one thread (``OMP_NUM_THREADS=1``), in the same process, one after the other; wall and
process-CPU seconds (on a shared machine the CPU seconds are the steadier).

Run from the repository root:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_3d.py                 # 96^3, 8 reference layers
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_3d.py --size 32 --full-reference   # checks the extrapolation
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai.networks.nets import DenseNet121
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import camanim  # noqa: E402


def clock(fn):
    """(result, wall seconds, process CPU seconds) of ``fn()``."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def reference_call(model, x, module, target):
    """One pytorch-grad-cam 3-D Grad-CAM of one layer (its forward, backward, scaling and zoom)."""
    with GradCAM(model=model, target_layers=[module]) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=96, help="volume side in voxels [96]")
    ap.add_argument("--ref-layers", type=int, default=8, help="pytorch-grad-cam calls timed, evenly spaced [8]")
    ap.add_argument("--full-reference", action="store_true", help="call pytorch-grad-cam on every layer")
    ap.add_argument("--repeats", type=int, default=1, help="camanim runs (the median is reported) [1]")
    args = ap.parse_args()
    torch.set_num_threads(1)

    torch.manual_seed(0)
    model = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2).eval()
    s = args.size
    x = torch.randn(1, 1, s, s, s, generator=torch.Generator().manual_seed(0))

    runs = []
    for _ in range(args.repeats):
        result, wall, cpu = clock(lambda: camanim.animate(model, x, layers="all"))
        runs.append((wall, cpu))
    wall_c = statistics.median(w for w, _ in runs)
    cpu_c = statistics.median(c for _, c in runs)
    records = result.layers
    spatial = [r for r in records if r.layout == "NCDHW"]
    modules = dict(model.named_modules())
    distinct = []  # a module with a 3-D map, once (its first call), in execution order
    for r in spatial:
        if r.call == 1 and r.module not in distinct:
            distinct.append(r.module)
    target = result.target.index
    del result

    if args.full_reference or args.ref_layers >= len(distinct):
        sample = list(range(len(distinct)))
    else:
        sample = sorted({int(round(k)) for k in np.linspace(0, len(distinct) - 1, args.ref_layers)})
    times = []
    for i in sample:
        _, wall, cpu = clock(lambda i=i: reference_call(model, x, modules[distinct[i]], target))
        times.append((wall, cpu))
    per_wall = statistics.mean(w for w, _ in times)
    per_cpu = statistics.mean(c for _, c in times)
    full = len(sample) == len(distinct)
    ref_wall = sum(w for w, _ in times) if full else per_wall * len(distinct)
    ref_cpu = sum(c for _, c in times) if full else per_cpu * len(distinct)
    how = "measured on every layer" if full else (
        f"EXTRAPOLATED: {len(sample)} of {len(distinct)} layers timed, mean per call x {len(distinct)}")

    print(f"MONAI DenseNet121 (3-D, random weights), input 1x1x{s}x{s}x{s}, torch threads: {torch.get_num_threads()}")
    print(f"records: {len(records)}, with a 3-D map: {len(spatial)}, distinct modules with a 3-D map: {len(distinct)}")
    print(f"(a) camanim, all layers, one pass:      wall {wall_c:8.1f} s   cpu {cpu_c:8.1f} s   "
          f"(median of {args.repeats})")
    print(f"(b) pytorch-grad-cam GradCAM per layer: wall {ref_wall:8.1f} s   cpu {ref_cpu:8.1f} s   ({how}; "
          f"per call: wall {per_wall:.2f} s, cpu {per_cpu:.2f} s)")
    print(f"ratio (b)/(a): wall {ref_wall / wall_c:.1f}x   cpu {ref_cpu / cpu_c:.1f}x")
    print(f"reference layers timed: {', '.join(distinct[i] for i in sample)}")


if __name__ == "__main__":
    main()
