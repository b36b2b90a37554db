"""SS-CAM and IS-CAM over many layers: camanim (one call, copies of all layers batched together and
shared where they are the same) against torchcam's ``SSCAM`` / ``ISCAM`` called layer by layer.

ResNet18 (random weights, seed 0, in-place ops made out of place, ``BasicBlock``'s ``+=`` too, so that
torchcam's hooks read the activations they mean to) on skimage's cat photo at ``--size`` px (default 224).

(1) Forwards over every layer camanim shows for it (``--count-layers``, default ``all``), counted
    exactly without running the model twice: camanim's plan (which channels run their own copies,
    which take another channel's scores, the zero image for IS-CAM's constant channels) is made from
    the real activations and its masked batches go to a stub that returns zero logits and counts
    them; torchcam's forwards per module are its loop's, ``samples * ceil(C / batch) + 2`` (the
    forward that fills its hook and its baseline forward), for every module camanim shows a spatial
    layer of (a module called twice, ResNet's ``relu``, is one torchcam call: its hook keeps the last
    call). The formula is checked against torchcam's counted forwards in (2).
(2) Time, side by side in one run, on ``--layers`` (default ``layer1*``: 15 layers, what fits the
    shared 2-core machine at 224 px): camanim (channels-last on CPU, its default, and contiguous,
    which isolates the sharing) and torchcam layer by layer (every module, its batch of
    ``--batch-size``), each ``--repeats`` times alternating, median wall and process-CPU seconds. The
    maps are compared (max relative difference) on every layer torchcam computes: a module's last call.

Both sides use ``--samples`` copies per channel and ``--batch-size`` (torchcam's defaults: SS-CAM 35,
IS-CAM 10, batch 32); SS-CAM's noise is seeded the same way on both sides (``torch.manual_seed`` of the
run's seed before each torchcam call, as camanim seeds every layer).

Run from the repository root (1 thread):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_torchcam_methods.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_torchcam_methods.py --layers all   # the whole timed job (hours on a CPU)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_torchcam_methods.py --layers all --no-count \
        --no-contiguous --methods sscam   # one method, all layers, about 70 min on one core at 2 copies
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn
from torchcam.methods import ISCAM, SSCAM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from camanim.compute.maps import layer_cams  # noqa: E402
from camanim.methods import MethodContext, get_method  # noqa: E402
from camanim.methods.perturbation import noise_seed  # noqa: E402
from camanim.trace import run_trace  # noqa: E402

REFERENCE = {"iscam": ISCAM, "sscam": SSCAM}


def basic_forward(self, x):
    """torchvision's ``BasicBlock.forward`` without its in-place ``out += identity``, which would change
    the BatchNorm output torchcam's hook keeps (the same maths)."""
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu(out + identity)


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


class Counter:
    """Counts a model's forwards and the images they held (a forward pre-hook)."""

    def __init__(self, model: nn.Module) -> None:
        self.calls = self.rows = 0
        self.handle = model.register_forward_pre_hook(self.hook)

    def hook(self, module, args) -> None:
        self.calls += 1
        self.rows += int(args[0].shape[0])


class ZeroLogits(nn.Module):
    """Stands for the model in the masked forwards when only their number is wanted."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], 1000)


def torchcam_modules(tr) -> list[tuple[str, int]]:
    """(module, index of the record torchcam's map equals) for each module with a spatial record."""
    last: dict[str, int] = {}
    for i, r in enumerate(tr.records):
        if not r.non_spatial:
            last[r.module] = i
    return list(last.items())


def torchcam_forwards(tr, samples: int, batch: int) -> tuple[int, int]:
    """(forwards, images) torchcam's loop runs for every module of ``torchcam_modules``, one at a time."""
    calls = rows = 0
    for _, i in torchcam_modules(tr):
        c = tr.records[i].shape[1]
        calls += samples * math.ceil(c / batch) + 2
        rows += samples * c + 2
    return calls, rows


def context(model, x, tr, args, **kw) -> MethodContext:
    return MethodContext(model=model, input_tensor=x, targets=tr.targets, batch_size=args.batch_size,
                         generator=torch.Generator().manual_seed(0), **kw)


def count_all(model, x, args) -> None:
    tr = run_trace(model, x, args.count_layers, gradients=False)
    spatial = [r for r in tr.records if not r.non_spatial]
    distinct = [r for r in spatial if r.same_as is None]
    print(f"(1) forwards over {len(tr.records)} layers ({args.count_layers}): {len(spatial)} spatial, "
          f"{len(distinct)} with an output of their own ({sum(r.shape[1] for r in distinct)} channels); "
          f"torchcam: {len(torchcam_modules(tr))} modules ({sum(tr.records[i].shape[1] for _, i in torchcam_modules(tr))}"
          f" channels); {args.samples} copies per channel, batch {args.batch_size}")
    print("| method | camanim forwards (images) | channels sharing copies | torchcam forwards (images) | ratio (images) |")
    print("|---|---|---|---|---|")
    for name in args.methods.split(","):
        method = get_method(name)
        method.samples = args.samples
        ctx = context(ZeroLogits(), x, tr, args, channels_last=False)
        layer_cams(tr, method, ctx)
        calls, rows = torchcam_forwards(tr, args.samples, args.batch_size)
        print(f"| {name} | {ctx.forwards} ({ctx.forward_rows}) | {ctx.extra[f'{name}_shared_masks']} | "
              f"{calls} ({rows}) | {rows / ctx.forward_rows:.2f}x |")


def timed(model, x, args) -> None:
    tr = run_trace(model, x, args.layers, gradients=False)
    modules = torchcam_modules(tr)
    target = int(tr.targets[0])
    print(f"\n(2) time on {args.layers}: {len(tr.records)} layers, torchcam {len(modules)} modules; "
          f"{args.samples} copies, batch {args.batch_size}, threads {torch.get_num_threads()}, "
          f"median of {args.repeats} runs")
    print("| method | camanim s, wall / CPU (forwards, images) | camanim contiguous s | torchcam layer by layer s "
          "(forwards, images) | speed-up (CPU) | speed-up contiguous (CPU) | max rel. diff |")
    print("|---|---|---|---|---|---|---|")
    for name in args.methods.split(","):
        method = get_method(name)
        method.samples = args.samples
        cls = REFERENCE[name]

        def ours(cl, method=method):
            ctx = context(model, x, tr, args, channels_last=cl)
            return layer_cams(tr, method, ctx), ctx

        def reference(cls=cls, name=name):
            maps = {}
            counter = Counter(model)
            try:
                for module, i in modules:
                    with cls(model, module, batch_size=args.batch_size, num_samples=args.samples,
                             input_shape=tuple(x.shape[1:])) as ex:
                        with torch.no_grad():
                            model(x)
                        if name == "sscam":
                            torch.manual_seed(noise_seed(context(model, x, tr, args)))
                        maps[i] = F.relu(ex(class_idx=target, normalized=False)[0][0])
            finally:
                counter.handle.remove()
            return maps, counter

        mine, flat, theirs = [], [], []
        for _ in range(args.repeats):
            mine.append(clock(lambda: ours(None)))
            if not args.no_contiguous:
                flat.append(clock(lambda: ours(False)))
            theirs.append(clock(reference))
        (cams, ctx), (ref, counter) = mine[0][0], theirs[0][0]
        expect = torchcam_forwards(tr, args.samples, args.batch_size)
        assert (counter.calls, counter.rows) == expect, (counter.calls, counter.rows, expect)
        w1, c1 = (float(np.median([t[k] for t in mine])) for k in (1, 2))
        w0, c0 = (float(np.median([t[k] for t in flat])) if flat else float("nan") for k in (1, 2))
        w2, c2 = (float(np.median([t[k] for t in theirs])) for k in (1, 2))
        diffs = {tr.records[i].name: float((cams[i][0] - m).abs().max() / (m.abs().max() + 1e-12)) for i, m in ref.items()}
        diff = max(diffs.values())
        print(f"| {name} | {w1:.1f} / {c1:.1f} ({ctx.forwards}, {ctx.forward_rows}) | {w0:.1f} / {c0:.1f} | "
              f"{w2:.1f} / {c2:.1f} ({counter.calls}, {counter.rows}) | {c2 / c1:.2f}x | {c2 / c0:.2f}x | {diff:.1e} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--count-layers", default="all", help="layers whose forwards are counted (1)")
    ap.add_argument("--layers", default="layer1*", help="layers timed side by side (2)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each side, alternating; medians are shown")
    ap.add_argument("--samples", type=int, default=2, help="copies per channel (torchcam: SS-CAM 35, IS-CAM 10)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--methods", default="iscam,sscam")
    ap.add_argument("--no-timing", action="store_true", help="only count the forwards (1)")
    ap.add_argument("--no-count", action="store_true", help="only time (2)")
    ap.add_argument("--no-contiguous", action="store_true",
                    help="time camanim only as it runs by default (channels-last), not also contiguous")
    args = ap.parse_args()
    torchvision.models.resnet.BasicBlock.forward = basic_forward
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    x = cat(args.size)
    print(f"resnet18 (random weights, seed 0) {args.size}px, {args.samples} copies per channel, batch {args.batch_size}")
    if not args.no_count:
        count_all(model, x, args)
    if not args.no_timing:
        timed(model, x, args)


if __name__ == "__main__":
    main()
