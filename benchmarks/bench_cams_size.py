"""``cams.npz`` before and after layer maps: the file's size for big models, and that the CAMs come back.

For each model (torchvision, ``--weights none``, seed 0) on ``sample:cat`` at the given input size,
Grad-CAM: ``camanim.animate`` once, then ``cams.npz`` written twice through ``camanim.rundir.write_cams``
in one process: as it was (the raw CAMs (L, H, W) float32 whole, the ``cams`` key) and as it is now
(layer maps + the upsampling rule, ``result.saved_cams()``, what ``save()`` writes). Both sizes, their
ratio, and the largest relative difference between ``camanim.load_cams`` and ``result.cams``.

A model given with a layer subset (``efficientnet_b7:600:every=40``: every 40th layer of the
network) is measured on that subset and **extrapolated** to all layers: the layer table of the whole
network (``camanim.trace_layers``, one forward without gradients) gives each layer's map size, and
both files' sizes follow from it (whole: L x H x W x 4 bytes; now: each distinct spatial layer's
h x w x 4 bytes plus 24 bytes of index per layer; both: non-spatial layers' vectors, C x ... x 4
bytes each). The same formula is printed for the measured subset (its own layer table, as the run
recorded it) beside its real sizes, so the extrapolation can be checked. A subset can hold more
non-spatial layers than the whole network: a module selected without the layers that feed it may be
placed differently (EfficientNet-B7's ``SqueezeExcitation`` outputs, then non-spatial with a vector
of C x h x w values), which is why each table is used for its own run.

Run from the repository root:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_cams_size.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_cams_size.py --models densenet161:224:all
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import camanim
from camanim.rundir import SavedCams, write_cams

DEFAULT = "densenet161:224:all,efficientnet_b7:600:every=40"


def predicted(records, size: tuple[int, int], base: int) -> tuple[int, int]:
    """(whole, maps) bytes of ``cams.npz`` from a layer table, ``base`` bytes for names, input and image.

    Whole: L x H x W x 4. Maps: each distinct (not ``same_as``) spatial NCHW layer's h x w x 4 and
    24 bytes of index per layer. Both: non-spatial layers' vectors (C x ... x 4 bytes each).
    """
    vectors = 9 * (len(records) + 1)
    for r in records:
        if r.non_spatial and r.shape and len(r.shape) >= 2:
            vectors += 4 * int(np.prod(r.shape[1:]))
    whole = len(records) * size[0] * size[1] * 4 + base + vectors
    maps = base + vectors + 24 * len(records)
    for r in records:
        if r.same_as is None and not r.non_spatial and r.shape and len(r.shape) == 4:
            maps += int(r.shape[2]) * int(r.shape[3]) * 4
    return whole, maps


def base_bytes(result) -> int:
    """Bytes of what both files hold besides CAMs and vectors: names, input, image (and the zip's headers)."""
    saved = result.saved_cams()
    return int(saved.names.nbytes + saved.input.nbytes + saved.image.nbytes) + 2000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=DEFAULT, help="NAME:SIZE:all or NAME:SIZE:every=N, comma-separated")
    args = ap.parse_args()
    print(f"$ OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python {' '.join(sys.argv)}")
    print(f"uptime load: {os.getloadavg()}  torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print()
    print("| model | size | layers | measured on | cams.npz before | cams.npz now | now / before | "
          "max rel. diff load_cams vs result.cams |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    work = Path(tempfile.mkdtemp(prefix="bench-cams-size-"))
    for spec in args.models.split(","):
        name, size_s, which = spec.split(":")
        size = int(size_s)
        torch.manual_seed(0)
        t0 = time.perf_counter()
        table = camanim.trace_layers(name, "all", weights="none", image=torch.rand(1, 3, size, size))
        layers: object = "all"
        if which.startswith("every="):
            step = int(which.split("=")[1])
            layers = sorted({r.name for r in table[::step]})
        torch.manual_seed(0)
        result = camanim.animate(name, "sample:cat", weights="none", input_size=size, layers=layers)
        assert tuple(result.cams.shape[1:]) == (size, size)
        base = result.saved_cams()
        whole = write_cams(work / "whole.npz", SavedCams(cams=result.cams.numpy(), names=base.names, input=base.input,
                                                          image=base.image, target=base.target, vectors=base.vectors,
                                                          vector_kind=base.vector_kind))
        maps = write_cams(work / "maps.npz", base)
        back = camanim.load_cams(maps)
        ref = result.cams.numpy()
        rel = float((np.abs(back - ref) / np.maximum(np.abs(ref), np.finfo(np.float32).tiny)).max())
        b_whole, b_maps = whole.stat().st_size, maps.stat().st_size
        n = len(result.layers)
        label = "all layers" if which == "all" else f"{n} of {len(table)} layers ({which})"
        print(f"| {name} | {size} | {n} | {label} | {b_whole / 1e6:.1f} MB | {b_maps / 1e6:.2f} MB | "
              f"**{b_maps / b_whole:.3f}** | {rel:.1e} |", flush=True)
        if which != "all":
            base = base_bytes(result)
            pw, pm = predicted(result.layers, (size, size), base)
            print(f"|   formula on the subset | | {n} | (check) | {pw / 1e6:.1f} MB | {pm / 1e6:.2f} MB | "
                  f"{pm / pw:.3f} | |")
            aw, am = predicted(table, (size, size), base + 64 * (len(table) - n))
            print(f"| {name} (**extrapolated**) | {size} | {len(table)} | formula on all layers | {aw / 1e6:.1f} MB | "
                  f"{am / 1e6:.1f} MB | **{am / aw:.3f}** | |", flush=True)
        print(f"<!-- {name}: {time.perf_counter() - t0:.0f} s -->")
        del result, back, ref
    print(f"\nuptime load at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
