"""Core speed: the single-pass engine against the per-layer loop and torchcam, and a full run.

Three measurements in one process, on torchvision models with random weights
(``torch.manual_seed(0)``, ``weights=None``, eval) and the ``sample:cat`` photo at 224x224
(``camanim.Preprocess()``: resize 256, centre crop 224, ImageNet normalisation), Grad-CAM:

1. Engine vs the per-layer loop, every layer (``layers="all"``), CAMs only. The loop is what the
   original CAManim did: a fresh ``pytorch_grad_cam.GradCAM(model, target_layers=[module])`` per
   layer, one forward and one backward each, same target class. It is timed on a seeded random
   sample of layers and extrapolated to every layer (to the module count, which is smaller than
   the frame count when a module runs several times). Its CAMs are also the reference: on the
   sampled layers, after min-max scaling per layer, the engine's CAMs must equal them. The loop
   runs on a copy of the model with every in-place operation made out-of-place (``inplace=False``
   on modules; ResNet's ``out += identity`` and DenseNet's ``F.relu(..., inplace=True)`` replaced),
   since pytorch-grad-cam's stored activations alias the tensors later changed in place. The
   engine runs on the model as torchvision builds it.
2. Engine vs torchcam 0.5.0 on the same layers: every module whose output is 4-D. torchcam: the
   forward and ``extractor(class_idx, scores)``, maps at layer resolution (it keeps only the last
   call of a reused module). Ours: ``camanim.animate(model, x, layers=names)``, every call of those
   modules, maps upsampled to 224x224. Runs interleaved (ABBA), medians. For scale, the floor: one
   forward and ``torch.autograd.grad`` of the target logit with respect to the input.
3. End to end: ``camanim.animate(model, "sample:cat")`` + ``result.save(out, report=False)``: raw CAMs,
   local and global frames as PNG, three MP4s. Median of runs, with the save's stages.
4. Where part 2's time goes: each side split into forward, backward and CAM step (and our upsampling).
5. How low part 2's gap can go: our CAM step and upsampling next to their floors (bare tensor ops
   on kept tensors; the same products written into memory already touched) and torchcam's CAM
   step alone.

Run from the repository root (2 cores: about 10 minutes; ``--quick`` about 2):

    .venv/bin/python benchmarks/bench_core.py
    .venv/bin/python benchmarks/bench_core.py --quick
    .venv/bin/python benchmarks/bench_core.py --models resnet18,densenet121 --parts 1,2

Results and the machine they were measured on: ``benchmarks/RESULTS_core.md``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models import densenet, resnet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import camanim  # noqa: E402
from camanim.draw import count_frames  # noqa: E402

TOLERANCE = 1e-4


# --------------------------------------------------------------------------- #
# Models and input
# --------------------------------------------------------------------------- #


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval()


def cat_input() -> torch.Tensor:
    pil, _ = camanim.load_image("sample:cat")
    x, _ = camanim.Preprocess()(pil)
    return x


def _bottleneck_forward(self: resnet.Bottleneck, x: torch.Tensor) -> torch.Tensor:
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    identity = x if self.downsample is None else self.downsample(x)
    return self.relu(out + identity)  # torchvision: out += identity


def _basic_block_forward(self: resnet.BasicBlock, x: torch.Tensor) -> torch.Tensor:
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    identity = x if self.downsample is None else self.downsample(x)
    return self.relu(out + identity)


def _densenet_forward(self: densenet.DenseNet, x: torch.Tensor) -> torch.Tensor:
    out = F.adaptive_avg_pool2d(F.relu(self.features(x)), (1, 1))  # torchvision: inplace=True
    return self.classifier(torch.flatten(out, 1))


def out_of_place(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with no in-place operation, module calls in the same order."""
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
        if isinstance(m, resnet.Bottleneck):
            m.forward = types.MethodType(_bottleneck_forward, m)
        elif isinstance(m, resnet.BasicBlock):
            m.forward = types.MethodType(_basic_block_forward, m)
    if isinstance(ref, densenet.DenseNet):
        ref.forward = types.MethodType(_densenet_forward, ref)
    return ref


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    gc.collect()
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def minmax(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    lo, hi = a.min(), a.max()
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:.1f} s"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def cpu_seconds() -> tuple[float, float]:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    def v(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "?"

    import imageio_ffmpeg

    versions = (f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
                f"grad-cam {v('grad-cam')}, torchcam {v('torchcam')}, numpy {np.__version__}, "
                f"opencv {v('opencv-python-headless')}, ffmpeg {imageio_ffmpeg.get_ffmpeg_version()}, "
                f"camanim {camanim.__version__}")
    return (f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores, "
            f"torch threads {torch.get_num_threads()}; {versions}")


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


# --------------------------------------------------------------------------- #
# 1. Engine vs the per-layer loop
# --------------------------------------------------------------------------- #


def engine_vs_loop(name: str, x: torch.Tensor, sample: int, repeats: int, seed: int) -> tuple[list[str], bool]:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = build(name)
    warm = camanim.animate(model, x, layers="all")
    cls = warm.target.index
    engine_times = []
    for _ in range(repeats):
        dt, result = timed(camanim.animate, model, x, layers="all", target=cls)
        engine_times.append(dt)
    engine = statistics.median(engine_times)
    records = result.layers
    modules = [n for n, _ in model.named_modules() if n]

    candidates = [r for r in records if r.layout == "NCHW" and r.call == 1]
    picked = sorted(random.Random(seed).sample(candidates, min(sample, len(candidates))), key=lambda r: r.index)
    ref = out_of_place(model)
    ref_modules = dict(ref.named_modules())

    def loop_layer(layer: str) -> np.ndarray:
        with GradCAM(model=ref, target_layers=[ref_modules[layer]]) as cam:
            return cam(input_tensor=x, targets=[ClassifierOutputTarget(cls)])[0]

    loop_layer(picked[0].module)  # warm-up
    per_layer, worst, worst_name = [], 0.0, ""
    for rec in picked:
        dt, ref_map = timed(loop_layer, rec.module)
        per_layer.append(dt)
        diff = float(np.abs(minmax(result.cams[rec.index].numpy()) - minmax(ref_map)).max())
        if diff >= worst:
            worst, worst_name = diff, rec.name
    mean = statistics.fmean(per_layer)
    loop_total = mean * len(modules)
    ok = worst < TOLERANCE
    print(f"  {name}: {len(picked)} sampled layers (seed {seed}), max |engine - loop| after min-max "
          f"{worst:.2e} at {worst_name}: {'OK' if ok else 'MISMATCH'}", flush=True)
    row = [name, f"{len(modules)} modules / {len(records)} frames", f"{len(picked)} (seed {seed})",
           fmt_s(mean), fmt_s(loop_total), fmt_s(engine), f"**{loop_total / engine:.0f}x**", f"{worst:.1e}"]
    return row, ok


# --------------------------------------------------------------------------- #
# 2. Engine vs torchcam
# --------------------------------------------------------------------------- #


def engine_vs_torchcam(name: str, x: torch.Tensor, repeats: int) -> list[str]:
    import torchcam.methods

    model = build(name)
    warm = camanim.animate(model, x, layers="all")
    cls = warm.target.index
    names = list(dict.fromkeys(r.module for r in warm.layers if r.call == 1 and len(r.shape) == 4))

    def run_torchcam() -> float:
        extractor = torchcam.methods.GradCAM(model, target_layer=names)
        try:
            gc.collect()
            t0 = time.perf_counter()
            scores = model(x)
            extractor(cls, scores)
            return time.perf_counter() - t0
        finally:
            extractor.remove_hooks()

    def run_ours() -> tuple[float, int]:
        dt, result = timed(camanim.animate, model, x, layers=names, target=cls)
        return dt, len(result.layers)

    def run_floor() -> float:
        xx = x.detach().clone().requires_grad_(True)
        gc.collect()
        t0 = time.perf_counter()
        torch.autograd.grad(model(xx)[0, cls], xx)
        return time.perf_counter() - t0

    run_torchcam()
    run_ours()  # warm-up
    tc, ours, floor = [], [], []
    for i in range(repeats):
        if i % 2 == 0:
            tc.append(run_torchcam())
            dt, frames = run_ours()
        else:
            dt, frames = run_ours()
            tc.append(run_torchcam())
        ours.append(dt)
        floor.append(run_floor())
    t, o, f = statistics.median(tc), statistics.median(ours), statistics.median(floor)
    print(f"  {name}: torchcam {[round(v, 3) for v in tc]}, ours {[round(v, 3) for v in ours]}, "
          f"floor {[round(v, 3) for v in floor]}", flush=True)
    return [name, f"{len(names)} modules / {frames} calls", fmt_s(t), fmt_s(o), f"**{o / t:.2f}**", fmt_s(f),
            f"{repeats}"]


def breakdown(name: str, x: torch.Tensor, repeats: int) -> list[str]:
    """Where the time of part 2 goes, both sides, interleaved, medians of ``repeats``.

    torchcam: its forward (hooks on), its backward (``_backprop``: grads of the hooked outputs)
    and its CAM step (the rest of ``extractor(cls, scores)``). Ours, as ``camanim.animate`` runs it:
    ``run_trace`` with the engine's sink, split where the backward starts into the forward and
    the backward with each layer's Grad-CAM computed as its gradient arrives (of which the CAMs
    themselves), then ``upsample`` to 224x224.
    """
    import torchcam.methods

    from camanim.compute.engine import CamSink
    from camanim.compute.maps import upsample
    from camanim.methods import MethodContext, get_method
    from camanim.trace import run_trace

    model = build(name)
    warm = camanim.animate(model, x, layers="all")
    cls = warm.target.index
    names = list(dict.fromkeys(r.module for r in warm.layers if r.call == 1 and len(r.shape) == 4))
    gradcam = get_method("gradcam")
    keys = ("tc fwd", "tc bwd", "tc cams", "tc", "tc free", "fwd", "bwd+cams", "cams", "upsample", "ours")
    t: dict[str, list[float]] = {k: [] for k in keys}

    class Timed(CamSink):
        def start(self, logits, targets, total):
            self.backward_from = time.perf_counter()
            super().start(logits, targets, total)

    for i in range(repeats + 1):
        extractor = torchcam.methods.GradCAM(model, target_layer=names)
        try:
            gc.collect()
            t0 = time.perf_counter()
            scores = model(x)
            t1 = time.perf_counter()
            extractor._backprop(scores, cls)
            t2 = time.perf_counter()
        finally:
            extractor.remove_hooks()
        del extractor, scores
        extractor = torchcam.methods.GradCAM(model, target_layer=names)
        try:
            gc.collect()
            t3 = time.perf_counter()
            extractor(cls, model(x))
            t4 = time.perf_counter()
        finally:
            extractor.remove_hooks()
        # torchcam keeps its activations and gradients until the extractor goes: free them before
        # our side runs (and time it: ours frees its own inside the call)
        t9 = time.perf_counter()
        del extractor
        t10 = time.perf_counter()
        gc.collect()
        sink = Timed([gradcam], {"gradcam": MethodContext()}, None)
        t5 = time.perf_counter()
        tr = run_trace(model, x, names, targets=[cls], sink=sink)
        t6 = time.perf_counter()
        upsample(sink.per_layer("gradcam", tr.records), tuple(x.shape[-2:]))
        t8 = time.perf_counter()
        del tr, sink.cams
        if i == 0:
            continue  # warm-up
        t["tc free"].append(t10 - t9)
        for key, value in (("tc fwd", t1 - t0), ("tc bwd", t2 - t1), ("tc", t4 - t3),
                           ("fwd", sink.backward_from - t5), ("bwd+cams", t6 - sink.backward_from),
                           ("cams", sink.seconds["gradcam"]), ("upsample", t8 - t6), ("ours", t8 - t5)):
            t[key].append(value)
        t["tc cams"].append((t4 - t3) - (t1 - t0) - (t2 - t1))
    med = {k: statistics.median(v) * 1000 for k, v in t.items() if v}
    print(f"  {name}: " + ", ".join(f"{k} {v:.0f} ms" for k, v in med.items()), flush=True)
    return [name, *(f"{med[k]:.0f}" for k in keys), f"{med['ours'] / med['tc']:.2f}"]


def floors(name: str, x: torch.Tensor, repeats: int) -> list[str]:
    """How low part 2's gap can go: each extra cost of ours next to its floor (ms, medians).

    The forward and the backward are the same work on both sides (part 4), so ours <= torchcam
    needs our CAMs plus the upsampling to cost no more than torchcam's CAM step. Measured here,
    on the same layers, interleaved:

    - torchcam's backward (``_backprop``) and ours with a sink that takes each layer and computes
      nothing (the hooks alone);
    - torchcam's CAM step alone (``compute_cams`` with its backward already done);
    - our Grad-CAM maps from kept activations and gradients: as the engine computes them
      (``cams.one_cam``) and the bare floor (mean, ``bmm``, ReLU in a plain loop; no cleaning,
      layout or bookkeeping);
    - our upsampling: as the engine does it (a fresh (L, 1, 224, 224) stack), the same products
      into a stack already touched, and allocating and zeroing the fresh stack alone (the kernel
      handing over new pages).
    """
    import torchcam.methods

    from camanim.compute.maps import layer_maps, one_cam, upsample
    from camanim.methods import MethodContext, get_method
    from camanim.trace import run_trace

    model = build(name)
    warm = camanim.animate(model, x, layers="all")
    cls = warm.target.index
    names = list(dict.fromkeys(r.module for r in warm.layers if r.call == 1 and len(r.shape) == 4))
    del warm
    gradcam, ctx = get_method("gradcam"), MethodContext()

    class Take:
        def __init__(self, keep: list | None = None) -> None:
            self.keep, self.at = keep, 0.0

        def start(self, logits, targets, total):
            self.at = time.perf_counter()

        def layer(self, index, record, activation, gradient):
            if self.keep is not None:
                pair = layer_maps(record, activation, gradient)
                if pair is not None:
                    self.keep.append((record, *pair))
            return True

    kept: list = []
    tr = run_trace(model, x, names, targets=[cls], sink=Take(kept))
    size = tuple(x.shape[-2:])
    keys = ("tc bwd", "hooks bwd", "tc cams", "cams", "bare cams", "upsample", "into touched", "fresh stack")
    t: dict[str, list[float]] = {k: [] for k in keys}
    touched = torch.zeros(len(tr.records), 1, *size)
    for i in range(repeats + 1):
        extractor = torchcam.methods.GradCAM(model, target_layer=names)
        try:
            gc.collect()
            scores = model(x)
            t0 = time.perf_counter()
            extractor._backprop(scores, cls)
            t1 = time.perf_counter()
            extractor._backprop = lambda *a, **k: None  # its gradients are in; time the CAM step alone
            extractor.compute_cams(cls, scores)
            t2 = time.perf_counter()
        finally:
            extractor.remove_hooks()
        del extractor, scores
        gc.collect()
        sink = Take()
        run_trace(model, x, names, targets=[cls], sink=sink)
        t3 = time.perf_counter()
        maps = [one_cam(gradcam, ctx, rec, a, g) for rec, a, g in kept]
        t4 = time.perf_counter()
        for _, a, g in kept:
            torch.bmm(g.mean((2, 3)).unsqueeze(1), a.flatten(2)).clamp_(min=0)
        t5 = time.perf_counter()
        per_layer = [None] * len(tr.records)
        for (rec, _, _), m in zip(kept, maps):
            per_layer[rec.index] = m
        gc.collect()
        t6 = time.perf_counter()
        stack = upsample(per_layer, size)
        t7 = time.perf_counter()
        del stack
        gc.collect()
        t8 = time.perf_counter()
        upsample(per_layer, size, out=touched)
        t9 = time.perf_counter()
        stack = torch.empty(len(tr.records), 1, *size)
        stack.zero_()
        t10 = time.perf_counter()
        del stack
        if i == 0:
            continue  # warm-up
        for key, value in zip(keys, (t1 - t0, t3 - sink.at, t2 - t1, t4 - t3, t5 - t4, t7 - t6, t9 - t8, t10 - t9)):
            t[key].append(value)
    med = {k: statistics.median(v) * 1000 for k, v in t.items()}
    best = med["bare cams"] + med["into touched"] + med["fresh stack"]
    print(f"  {name}: " + ", ".join(f"{k} {v:.0f} ms" for k, v in med.items())
          + f"; floor of ours minus torchcam's CAM step {best - med['tc cams']:+.0f} ms", flush=True)
    return [name, f"{len(kept)}", f"{sum(a.numel() for _, a, _ in kept) / 1e6:.1f} M",
            *(f"{med[k]:.0f}" for k in keys), f"**{best - med['tc cams']:+.0f}**"]


# --------------------------------------------------------------------------- #
# 3. End to end
# --------------------------------------------------------------------------- #


def end_to_end(name: str, runs: int, with_report: bool) -> tuple[list[str], list[str]]:
    model = build(name)
    camanim.animate(model, "sample:cat", layers="all")  # warm-up
    totals, animates, saves, stages_all, cpus = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-core-") as tmp:
        for i in range(runs):
            out = Path(tmp) / f"run{i}"
            stages: dict[str, list[float]] = {}

            def progress(stage: str, done: int, total: int, stages=stages) -> None:
                now = time.perf_counter()
                stages.setdefault(stage.split()[0], [now, now])[1] = now

            gc.collect()
            c0 = cpu_seconds()
            t0 = time.perf_counter()
            result = camanim.animate(model, "sample:cat", layers="all")
            t1 = time.perf_counter()
            result.save(out, report=with_report, progress=progress)
            t2 = time.perf_counter()
            c1 = cpu_seconds()
            totals.append(t2 - t0)
            animates.append(t1 - t0)
            saves.append(t2 - t1)
            cpus.append((c1[0] - c0[0], c1[1] - c0[1]))
            stages_all.append({k: (a - t1, b - t1) for k, (a, b) in stages.items()})
            print(f"  run {i + 1}: animate {t1 - t0:.2f} s, save {t2 - t1:.2f} s, total {t2 - t0:.2f} s; "
                  f"CPU: python {cpus[-1][0]:.1f} s, ffmpeg {cpus[-1][1]:.1f} s; load {load()}", flush=True)
        frames = len(result.layers)
        pngs = [len(list((out / "frames" / n).glob("*.png"))) for n in ("local", "global")]
        videos = {p.name: count_frames(p) for p in sorted(out.glob("*.mp4"))}
        sizes = {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}
        png_bytes = sum(p.stat().st_size for p in (out / "frames").rglob("*.png"))
    assert pngs == [frames, frames] and len(videos) == 3 and all(v == frames for v in videos.values()), (pngs, videos)
    mid = sorted(range(runs), key=lambda i: totals[i])[runs // 2]
    st = stages_all[mid]
    stage_text = ", ".join(f"{k} {a:.1f}-{b:.1f} s" for k, (a, b) in st.items())
    print(f"  outputs: {frames} layers, PNG {pngs} ({png_bytes / 2**20:.0f} MiB), videos "
          + ", ".join(f"{k} {v} frames {sizes[k] / 2**20:.1f} MiB" for k, v in videos.items()), flush=True)
    row = [name, f"{frames}", fmt_s(statistics.median(animates)), fmt_s(statistics.median(saves)),
           f"**{fmt_s(statistics.median(totals))}**", f"{cpus[mid][0]:.1f} s + {cpus[mid][1]:.1f} s",
           ", ".join(f"{v:.1f}" for v in totals)]
    return row, [f"median run's save stages (seconds after animate): {stage_text}"]


# --------------------------------------------------------------------------- #


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50,densenet161", help="torchvision model names (parts 1 and 2)")
    ap.add_argument("--quick", action="store_true", help="resnet50 only, fewer repeats and sampled layers")
    ap.add_argument("--parts", default="1,2,3", help="which measurements: 1 loop, 2 torchcam, 3 end to end, "
                    "4 where part 2's time goes, 5 how low part 2's gap can go")
    ap.add_argument("--sample", type=int, default=15, help="layers timed in the per-layer loop")
    ap.add_argument("--seed", type=int, default=0, help="seeds the layer sample")
    ap.add_argument("--repeats", type=int, default=5, help="runs per side in parts 1 and 2")
    ap.add_argument("--e2e-model", default="densenet161")
    ap.add_argument("--e2e-runs", type=int, default=3)
    ap.add_argument("--with-report", action="store_true", help="part 3: save() also builds report.html")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.models, args.sample, args.repeats = "resnet50", 5, 3
        args.e2e_model, args.e2e_runs = "resnet50", 1
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    parts = {p.strip() for p in args.parts.split(",")}
    command = "python benchmarks/bench_core.py " + " ".join(sys.argv[1:] if argv is None else argv)

    print(f"# bench_core ({time.strftime('%Y-%m-%d %H:%M')})\n\n`{command.strip()}`\n\n{machine()}\n"
          f"load average at start: {load()}\n", flush=True)
    x = cat_input()
    ok = True
    report = []
    if "1" in parts:
        print("## 1. Engine vs per-layer loop (Grad-CAM, all layers, CAMs only)", flush=True)
        rows = []
        for name in models:
            row, good = engine_vs_loop(name, x, args.sample, args.repeats, args.seed)
            rows.append(row)
            ok &= good
        report.append("## 1. Engine vs the per-layer loop (Grad-CAM, all layers, CAMs only)\n\n" + table(
            ["model", "layers", "loop timed on", "loop per layer", "loop, all layers (extrapolated)",
             f"engine (median of {args.repeats})", "speed-up", "max diff"], rows))
    if "2" in parts:
        print("## 2. Engine vs torchcam (same layers)", flush=True)
        rows = [engine_vs_torchcam(name, x, args.repeats) for name in models]
        report.append("## 2. Engine vs torchcam 0.5.0 (every module with a 4-D output)\n\n" + table(
            ["model", "layers", "torchcam (medians)", "ours, with upsampling", "ours / torchcam",
             "floor: forward + grad to input", "runs each"], rows))
    if "4" in parts:
        print("## 4. Where part 2's time goes (ms)", flush=True)
        rows = [breakdown(name, x, args.repeats) for name in models]
        report.append("## 4. Where part 2's time goes (ms, medians, interleaved)\n\n" + table(
            ["model", "torchcam fwd", "torchcam bwd", "torchcam CAMs", "torchcam", "then freeing its tensors",
             "our forward", "our backward with CAMs", "(of which CAMs)", "our upsample", "ours",
             "ours / torchcam"], rows))
    if "5" in parts:
        print("## 5. How low part 2's gap can go (ms)", flush=True)
        rows = [floors(name, x, args.repeats) for name in models]
        report.append("## 5. How low part 2's gap can go (ms, medians, interleaved)\n\n" + table(
            ["model", "maps", "activation values", "torchcam bwd", "our bwd, hooks only", "torchcam CAM step",
             "our maps", "bare maps (floor)", "our upsample", "same into touched memory",
             "fresh stack alone", "floor: bare maps + touched + fresh - torchcam's CAM step"], rows))
    if "3" in parts:
        print(f"## 3. End to end ({args.e2e_model})", flush=True)
        row, notes = end_to_end(args.e2e_model, args.e2e_runs, args.with_report)
        what = "save() with report.html" if args.with_report else "save(report=False)"
        report.append(f"## 3. End to end: animate + {what}\n\n" + table(
            ["model", "frames", "animate", "save", f"total (median of {args.e2e_runs})",
             "CPU (python + ffmpeg), median run", "all runs (s)"], [row]) + "\n\n" + "\n".join(notes))
    print("\n" + "\n\n".join(report) + f"\n\nload average at end: {load()}")
    if not ok:
        print("\nMISMATCH: the engine's CAMs differ from pytorch-grad-cam's beyond", TOLERANCE)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
