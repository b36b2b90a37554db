"""A fair race with torchcam: the same layers, the same work, side by side in one run.

On torchvision ResNet50 and DenseNet161 (random weights, ``torch.manual_seed(0)``, eval) and one
random 1x3x224x224 input, Grad-CAM of one class (the predicted one) on the same layers: every
module whose output is 4-D and that runs **once** per forward (torchcam keeps only the last call of
a module that runs several times, camanim every call; leaving those out makes the work equal:
ResNet's ``relu`` modules run three times per block), and whose output is more than 1x1 (global
pooling's (1, C, 1, 1) is a non-spatial layer for camanim, a 1x1 "map" for torchcam).

Two races, each timed from the forward to the maps in hand:

1. **layer resolution**: torchcam 0.5.0 (``GradCAM(model, target_layer=names)``, the forward, then
   ``extractor(class_idx, scores)``, which runs the backward and ``compute_cams``: one map per layer at
   the layer's resolution) against camanim's engine with ``upsampled=False``
   (``camanim.compute.compute_cams(model, x, [gradcam], CamOptions(layers=names), targets=[cls],
   upsampled=False)``: the maps at layer resolution, ``Computation.maps``);
2. **upsampled to 224x224**: torchcam as above plus ``F.interpolate(map, 224, bilinear,
   align_corners=False)`` on each map, against camanim's engine as ``animate`` runs it (every map
   upsampled, stacked (L, 1, 224, 224)).

Runs interleaved (ABAB then BABA ...), medians of ``--repeats`` of wall and process-CPU seconds (the
steadier figure on a shared machine); ratios ours / torchcam (goal <= 1).

``--checks-off`` adds a third runner, interleaved with the two: camanim with the checks that keep its
maps right switched off by patching (an experiment, not a setting camanim has): the in-place
fingerprints (``trace.inplace.fingerprint`` returns a constant), the layout evidence mode
(``trace.run.LayoutEvidence`` does nothing), the zero-gradient check (``trace.backward._nonzero``
says True) and the paced ``malloc_trim`` of the backward (``memory.Freed.add`` does nothing). It
measures what those checks cost; torchcam has none of them.
The maps are compared after min-max scaling per layer: equal to 1e-4 on every layer whose output is
not changed in place later (torchcam keeps the very tensor a hook saw, so it reads a BatchNorm output
after ResNet's ``out += identity`` or DenseNet's in-place ReLU changed it; camanim records the value
the layer returned); the layers that differ are named.

Run from the repository root:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_torchcam_race.py --repeats 5
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections import Counter

import torch
import torch.nn.functional as F
import torchvision

import camanim
import camanim.memory
import camanim.trace.backward
import camanim.trace.inplace
import camanim.trace.run
from camanim.compute import compute_cams

SIZE = 224


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval()


def once_4d(model: torch.nn.Module, x: torch.Tensor) -> list[str]:
    """Modules with a 4-D output of more than 1x1 that run once per forward, in execution order."""
    records = camanim.trace_layers(model, "all", image=x)
    calls = Counter(r.module for r in records)
    return [r.module for r in records if calls[r.module] == 1 and len(r.shape) == 4 and tuple(r.shape[2:]) != (1, 1)]


def scaled(m: torch.Tensor) -> torch.Tensor:
    m = m.double()
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else torch.zeros_like(m)


class _NoEvidence:
    """Stands in for ``LayoutEvidence``: no torch-function mode."""

    def __init__(self, *args: object) -> None:
        pass

    def __enter__(self) -> _NoEvidence:
        return self

    def __exit__(self, *exc: object) -> bool:
        return False


class checks_off:
    """Patches camanim's in-place, layout, zero-gradient and trimming checks away while inside."""

    def __enter__(self) -> None:
        zero = torch.zeros(())
        self.saved = [(camanim.trace.inplace, "fingerprint", lambda t: zero),
                      (camanim.trace.run, "LayoutEvidence", _NoEvidence),
                      (camanim.trace.backward, "_nonzero", lambda g: True),
                      (camanim.memory.Freed, "add", lambda self, n: None)]
        self.saved = [(obj, attr, getattr(obj, attr), new) for obj, attr, new in self.saved]
        for obj, attr, _, new in self.saved:
            setattr(obj, attr, new)

    def __exit__(self, *exc: object) -> None:
        for obj, attr, old, _ in self.saved:
            setattr(obj, attr, old)


def race(name: str, repeats: int, bare: bool = False) -> list[list[str]]:
    import torchcam.methods

    model = build(name)
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    names = once_4d(model, x)
    with torch.no_grad():
        cls = int(model(x)[0].argmax())
    gradcam = camanim.get_method("gradcam")
    opts = camanim.CamOptions(layers=names)

    def torchcam_maps(up: bool) -> tuple[float, list[torch.Tensor]]:
        extractor = torchcam.methods.GradCAM(model, target_layer=names)
        try:
            gc.collect()
            t0, c0 = time.perf_counter(), time.process_time()
            scores = model(x)
            maps = extractor(cls, scores)
            if up:
                maps = [F.interpolate(m.unsqueeze(1), size=(SIZE, SIZE), mode="bilinear", align_corners=False)
                        for m in maps]
            return (time.perf_counter() - t0, time.process_time() - c0), maps
        finally:
            extractor.remove_hooks()

    def ours(up: bool) -> tuple[float, object]:
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        comp = compute_cams(model, x, [gradcam], opts, targets=[cls], upsampled=up)
        return (time.perf_counter() - t0, time.process_time() - c0), comp

    def ours_bare(up: bool) -> tuple[float, object]:
        with checks_off():
            return ours(up)

    # the same maps
    _, tc = torchcam_maps(False)
    _, comp = ours(False)
    maps = [m for m in comp.maps["gradcam"] if m is not None]
    assert len(maps) == len(tc) == len(names), (len(maps), len(tc), len(names))
    diffs = [float((scaled(a[0]) - scaled(b[0])).abs().max()) for a, b in zip(maps, tc)]
    differ = [n for n, d in zip(names, diffs) if d >= 1e-4]
    worst = max(d for d in diffs if d < 1e-4)
    _, up = ours(True)
    assert tuple(up.cams["gradcam"].shape) == (len(names), 1, SIZE, SIZE)

    if bare:
        _, plain = ours(False)
        _, off = ours_bare(False)
        assert all(torch.equal(a, b) for a, b in zip(plain.maps["gradcam"], off.maps["gradcam"]) if a is not None), \
            "the maps with the checks off differ: the race would not be of the same work"
    runners = [("torchcam", torchcam_maps), ("camanim", ours)] + ([("camanim, checks off", ours_bare)] if bare else [])
    rows = []
    for label, up in (("layer resolution", False), ("upsampled to 224", True)):
        times: dict[str, list[tuple[float, float]]] = {who: [] for who, _ in runners}
        for i in range(repeats):
            turn = runners[i % len(runners):] + runners[:i % len(runners)]
            for who, run in (turn if i % 2 == 0 else turn[::-1]):
                times[who].append(run(up)[0])
        mt, ct = (statistics.median(v[k] for v in times["torchcam"]) for k in (0, 1))
        print(f"  {name} {label}: " + "; ".join(f"{who} wall/CPU {[(round(a, 3), round(b, 3)) for a, b in t]}"
                                                for who, t in times.items()), flush=True)
        for who, _ in runners[1:]:
            mo, co = (statistics.median(v[k] for v in times[who]) for k in (0, 1))
            rows.append([name, str(len(names)), label + ("" if who == "camanim" else f" ({who})"),
                         f"{mt:.3f} / {ct:.3f}", f"{mo:.3f} / {co:.3f}", f"{mo / mt:.2f}", f"**{co / ct:.2f}**"])
    print(f"  {name}: maps equal after min-max scaling on {len(names) - len(differ)} of {len(names)} layers "
          f"(max |difference| {worst:.1e}); different on {len(differ)}: {differ[:6]}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50,densenet161")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--checks-off", action="store_true",
                    help="also race camanim with its in-place, layout, zero-gradient and trim checks patched away")
    args = ap.parse_args()
    print(f"$ OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python {' '.join(sys.argv)}")
    print(f"uptime load at the start: {os.getloadavg()}; torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    rows = [r for name in args.models.split(",") for r in race(name, args.repeats, args.checks_off)]
    print()
    print(f"| model | layers | maps | torchcam s, wall / CPU (median of {args.repeats}) | camanim s, wall / CPU | "
          "camanim / torchcam, wall | camanim / torchcam, CPU |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(f"\nuptime load at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
