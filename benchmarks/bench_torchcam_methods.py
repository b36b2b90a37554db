"""SS-CAM and IS-CAM over many layers: camanim (one call, copies of all layers batched together) against
torchcam's ``SSCAM`` / ``ISCAM`` called layer by layer, with the same results.

ResNet18 (random weights, seed 0) on skimage's cat photo at ``--size`` px (default 64 px and two
layers, so that the job finishes in minutes on a shared CPU; ``--size 224 --layers all`` is the issue's
full job, for a GPU machine). camanim computes every
layer of ``--layers`` in one ``cam_batch`` (masked copies of all channels, samples and layers packed
into batches of ``--batch-size``, channels-last on CPU, inference mode); torchcam runs each layer on
its own (its batch of ``--batch-size``). Both use ``--samples`` copies per channel; SS-CAM's noise is
seeded per layer the same way on both sides, so the maps are compared (max relative difference).
Each side runs ``--repeats`` times, alternating; the median wall and process-CPU seconds are given (on a
shared machine the CPU seconds are the steadier).

Run from the repository root (1 thread):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_torchcam_methods.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_torchcam_methods.py --layers all --samples 35  # the full job (hours on a CPU)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torchcam.methods import ISCAM, SSCAM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from camanim.compute.maps import layer_cams  # noqa: E402
from camanim.methods import MethodContext, get_method  # noqa: E402
from camanim.methods.perturbation import noise_seed  # noqa: E402
from camanim.trace import run_trace  # noqa: E402


def cat(size: int) -> torch.Tensor:
    from skimage import data
    img = Image.fromarray(data.chelsea()).resize((size, size))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    return ((x - mean[:, None, None]) / std[:, None, None])[None]


def clock(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--layers", default="layer2.1.conv2,layer3.1.conv2")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each side, alternating; medians are shown")
    ap.add_argument("--samples", type=int, default=2, help="copies per channel (torchcam: SS-CAM 35, IS-CAM 10)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--methods", default="iscam,sscam")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = cat(args.size)
    tr = run_trace(model, x, args.layers, gradients=False)
    recs = [(i, r) for i, r in enumerate(tr.records) if not r.non_spatial and r.same_as is None]
    channels = sum(r.shape[1] for _, r in recs)
    target = int(tr.targets[0])
    print(f"resnet18 {args.size}px, {len(recs)} layers, {channels} channels, {args.samples} copies each, "
          f"batch {args.batch_size}, threads {torch.get_num_threads()}, median of {args.repeats} runs")
    print("| method | camanim s (wall / CPU) | torchcam layer by layer s (wall / CPU) | speed-up (CPU) | "
          "max rel. diff |")
    print("|---|---|---|---|---|")
    for name in args.methods.split(","):
        method = get_method(name)
        method.samples = args.samples
        cls = {"iscam": ISCAM, "sscam": SSCAM}[name]

        def context():
            return MethodContext(model=model, input_tensor=x, targets=tr.targets, batch_size=args.batch_size,
                                 generator=torch.Generator().manual_seed(0))

        def reference(cls=cls, name=name):
            ctx = context()
            maps = {}
            for i, r in recs:
                with cls(model, r.module, batch_size=args.batch_size, num_samples=args.samples,
                         input_shape=tuple(x.shape[1:])) as ex:
                    with torch.no_grad():
                        model(x)
                    if name == "sscam":
                        torch.manual_seed(noise_seed(ctx))
                    maps[i] = F.relu(ex(class_idx=target, normalized=False)[0][0])
            return maps

        mine, theirs = [], []
        for _ in range(args.repeats):
            mine.append(clock(lambda method=method: layer_cams(tr, method, context())))
            theirs.append(clock(reference))
        ours, ref = mine[0][0], theirs[0][0]
        w1, c1 = (float(np.median([t[k] for t in mine])) for k in (1, 2))
        w2, c2 = (float(np.median([t[k] for t in theirs])) for k in (1, 2))
        diff = max(float((ours[i][0] - ref[i]).abs().max() / (ref[i].abs().max() + 1e-12)) for i, _ in recs)
        print(f"| {name} | {w1:.1f} / {c1:.1f} | {w2:.1f} / {c2:.1f} | {c2 / c1:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
