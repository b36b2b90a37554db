"""ybROAD speed and agreement against pytorch-grad-cam's ROAD, on ResNet50 at 224x224.

Three timings in one process, over the same CAMs, 4 percentages, noise 0:

(a) pytorch-grad-cam: ``ROADMostRelevantFirst`` + ``ROADLeastRelevantFirst`` layer by
    layer (8 metric calls per layer), on a sample of ``--ref-layers`` layers,
    extrapolated per layer;
(b) ``camanim.road.ybroad`` on all ``--layers`` layers;
(c) the floor: just the perturbed forward passes, ``8 * layers`` images in batches
    of ``--batch-size`` under ``torch.inference_mode``.

CAMs: Grad-CAM computed here with hooks (one forward and backward for all chosen
Conv2d layers): ``ReLU(sum_c mean_hw(dy/dA_c) * A_c)``, bilinearly upsampled to
224x224, not scaled. ReLU zeros make ties, where pytorch-grad-cam's percentile
threshold does not remove the requested share of pixels; so both sides get the
CAMs in float64 plus a 1e-9 * max(cam) seeded jitter, which only orders the ties.

Run from the repository root:

    .venv/bin/python benchmarks/bench_road.py --layers 16 --ref-layers 5

``--no-ref`` leaves out (a) (slow) and times (b) against (c) only; ``--before OLD/src`` also times
another tree's ``ybroad`` (imported as ``camanim_before``), interleaved with (b) and (c) in the same
process, and prints the largest score difference between the two (issue 15's before/after):

    git archive BASE src | tar -x -C /tmp/before
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_road.py --model efficientnet_lite0 --layers 16 \
        --batch-size 8 --repeats 3 --no-ref --before /tmp/before/src
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from pytorch_grad_cam.metrics import road as ref_road
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from camanim.road import imputation, ybroad  # noqa: E402
from camanim.road.masks import masks_from_order, removed_count  # noqa: E402

PCTS = (20, 40, 60, 80)


class _NoiseFreeImputer(ref_road.NoisyLinearImputer):
    def __init__(self) -> None:
        super().__init__(noise=0.0)


def chelsea_input(size: int = 224) -> torch.Tensor:
    """skimage's cat photo, resized and ImageNet-normalised, as (1, 3, size, size)."""
    from skimage import data

    img = Image.fromarray(data.chelsea()).resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(img)).permute(2, 0, 1).float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    return ((x - mean) / std)[None]


def grad_cams(model: nn.Module, x: torch.Tensor, layers: list[str], target: int) -> torch.Tensor:
    """Raw Grad-CAM of each named layer, upsampled to the input size: [L, H, W]."""
    modules = dict(model.named_modules())
    acts: dict[str, torch.Tensor] = {}
    handles = [modules[n].register_forward_hook(lambda _m, _i, out, n=n: acts.__setitem__(n, out)) for n in layers]
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    grads = torch.autograd.grad(out[0, target], [acts[n] for n in layers])
    cams = []
    for n, g in zip(layers, grads, strict=True):
        cam = torch.relu((g.mean(dim=(2, 3), keepdim=True) * acts[n]).sum(dim=1, keepdim=True))
        cams.append(nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0])
    return torch.stack(cams).detach()


def reference_road(model: nn.Module, x: torch.Tensor, cam: np.ndarray, target, pcts=PCTS) -> dict[str, np.ndarray]:
    """pytorch-grad-cam's MoRF and LeRF for one CAM at each percentage removed (its percentile = pixels kept)."""
    morf = [ref_road.ROADMostRelevantFirst(100 - p)(x, cam[None], [target], model)[0] for p in pcts]
    lerf = [ref_road.ROADLeastRelevantFirst(100 - p)(x, cam[None], [target], model)[0] for p in pcts]
    return {"morf": np.array(morf, dtype=np.float64), "lerf": np.array(lerf, dtype=np.float64)}


class Clock:
    """Wall and process CPU seconds of a block (CPU time is less disturbed by other jobs on a shared machine)."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def forward_floor(model: nn.Module, x: torch.Tensor, n_images: int, batch_size: int) -> Clock:
    """Time to push n_images copies of x through the model in batches, under inference mode."""
    batches = [x.expand(min(batch_size, n_images - s), -1, -1, -1).contiguous()
               for s in range(0, n_images, batch_size)]
    with Clock() as clock, torch.inference_mode():
        for b in batches:
            model(b)
    return clock


def breakdown(model: nn.Module, x: torch.Tensor, cams: torch.Tensor, batch_size: int) -> None:
    """Where ybROAD's CPU goes, one thread: a forward per image, and per mask size the imputation's
    building (everything but the factorisation) and SuperLU's factorisation and solve."""
    n_layers, height, width = cams.shape
    n_pix = height * width
    ks = [removed_count(p, n_pix) for p in PCTS]
    masks = []  # (percentage index, mask) of every layer's MoRF and LeRF masks
    for cam in cams.reshape(n_layers, n_pix).numpy():
        for order in (np.argsort(-cam, kind="stable"), np.argsort(cam, kind="stable")):
            masks += list(enumerate(masks_from_order(order, ks, n_pix)))
    flat = x[0].double().reshape(-1, n_pix).numpy()
    batch = x.expand(batch_size, -1, -1, -1).contiguous()
    with torch.inference_mode():
        model(batch)
        with Clock() as clock:
            for _ in range(3):
                model(batch)
    per_image = clock.cpu / (3 * batch_size)
    spd = imputation._solve_spd
    build = np.zeros(len(PCTS))
    total = np.zeros(len(PCTS))
    for i, mask in masks:
        with Clock() as whole:
            imputation._solve_group(flat, mask[None], height, width)
        imputation._solve_spd = lambda a, b: np.zeros(b.shape)
        try:
            with Clock() as built:
                imputation._solve_group(flat, mask[None], height, width)
        finally:
            imputation._solve_spd = spd
        build[i] += built.cpu
        total[i] += whole.cpu
    rows = {"SuperLU": (build, total)}
    per_pct = len(masks) // len(PCTS)
    print(f"one thread, CPU ms: a forward {1000 * per_image:.1f} per image (batch {batch_size}); per mask "
          f"({per_pct} masks per percentage):")
    print("| % removed | build | " + " | ".join(f"{n} factor+solve" for n in rows) + " |")
    print("|---|---|" + "---|" * len(rows))
    for i, p in enumerate(PCTS):
        cells = " | ".join(f"{1000 * (t[i] - b[i]) / per_pct:.1f}" for b, t in rows.values())
        print(f"| {p} | {1000 * next(iter(rows.values()))[0][i] / per_pct:.1f} | {cells} |")
    for name, (b, t) in rows.items():
        print(f"{name}: all {len(masks)} masks {t.sum():.2f} s CPU ({b.sum():.2f} s building), against "
              f"{per_image * len(masks):.2f} s of forwards for as many images")


def load_before(src: Path):
    """``camanim.road.ybroad`` of another tree (its ``src/`` folder), imported as ``camanim_before``."""
    init = src / "camanim" / "__init__.py"
    spec = importlib.util.spec_from_file_location("camanim_before", init,
                                                  submodule_search_locations=[str(init.parent)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["camanim_before"] = module
    spec.loader.exec_module(module)
    return importlib.import_module("camanim_before.road").ybroad


def report_ours_floor(ours_t: list[Clock], floor_t: list[Clock], n_layers: int) -> None:
    """Print (b) against (c): per layer, every run, and the ratios of the fastest runs (wall and CPU)."""
    ours = min(ours_t, key=lambda c: c.wall)
    floor = min(floor_t, key=lambda c: c.wall)
    print(f"| (b) camanim ybroad ({n_layers} layers) | {ours.wall / n_layers:.3f} | {ours.cpu / n_layers:.3f} |")
    print(f"| (c) forward floor ({8 * n_layers} images) | {floor.wall / n_layers:.3f} | {floor.cpu / n_layers:.3f} |")
    print(f"(b) runs, wall/CPU: {', '.join(f'{c.wall:.2f}/{c.cpu:.2f}' for c in ours_t)} s; "
          f"(c) runs, wall/CPU: {', '.join(f'{c.wall:.2f}/{c.cpu:.2f}' for c in floor_t)} s (fastest used)")
    print(f"(b)/(c): {ours.wall / floor.wall:.2f} wall, {ours.cpu / floor.cpu:.2f} CPU; "
          f"CPU of the least-CPU runs: {min(c.cpu for c in ours_t) / min(c.cpu for c in floor_t):.2f}")
    if hasattr(os, "getloadavg"):
        print(f"1-minute load average at the end: {os.getloadavg()[0]:.2f} (on {os.cpu_count()} cores)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=16, help="Conv2d layers, evenly spaced over the model's [16]")
    ap.add_argument("--ref-layers", type=int, default=5, help="layers timed with pytorch-grad-cam [5]")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2,
                    help="runs of (b) and (c), interleaved; the fastest of each is reported (least disturbed)")
    ap.add_argument("--model", choices=["resnet50", "efficientnet_lite0"], default="resnet50",
                    help="resnet50 (random weights) or the built-in efficientnet_lite0 (ImageNet weights)")
    ap.add_argument("--no-ref", action="store_true",
                    help="skip (a), pytorch-grad-cam's ROAD (slow): time only (b) and (c)")
    ap.add_argument("--before", type=Path, default=None,
                    help="src/ folder of another tree: its ybroad is timed too, interleaved with (b) and (c), "
                         "and its scores compared with ours")
    ap.add_argument("--breakdown", action="store_true",
                    help="only print where the CPU goes: a forward per image, and per mask size the "
                         "imputation's building and solving (SuperLU), one thread")
    ap.add_argument("--score", choices=["prob", "logit"], default="logit",
                    help="logit by default: a random-weight ResNet50's softmax can saturate and hide differences")
    args = ap.parse_args()

    torch.manual_seed(0)
    if args.model == "efficientnet_lite0":
        import camanim

        # the built-in model with its real ImageNet weights and its own preprocessing
        loaded = camanim.load_model("efficientnet_lite0")
        model = loaded.module.eval()
        x = loaded.preprocess(camanim.load_image("sample:cat")[0])[0]
    else:
        model = torchvision.models.resnet50(weights=None).eval()
        x = chelsea_input()
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    pick = np.unique(np.linspace(0, len(convs) - 1, args.layers).round().astype(int))
    layers = [convs[i] for i in pick]
    with torch.no_grad():
        logits = model(x)[0]
    target = int(logits.argmax())
    cams = grad_cams(model, x, layers, target).double()
    g = torch.Generator().manual_seed(0)
    cams = cams + 1e-9 * cams.amax(dim=(1, 2), keepdim=True) * torch.rand(cams.shape, generator=g, dtype=torch.float64)
    n_layers = len(layers)
    desc = "EfficientNet-Lite0 (ImageNet weights)" if args.model == "efficientnet_lite0" else "ResNet50 (weights=None, seed 0)"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads; {desc}, "
          f"chelsea 224x224, target {target} (logit {float(logits[target]):.1f}), {n_layers} layers, "
          f"batch {args.batch_size}, score {args.score}")

    if args.breakdown:
        breakdown(model, x, cams, args.batch_size)
        return

    # (b) and (c), interleaved so machine noise hits both alike.
    ours_t: list[Clock] = []
    floor_t: list[Clock] = []
    before_t: list[Clock] = []
    before_ybroad = load_before(args.before) if args.before is not None else None
    result = before = None
    for _ in range(args.repeats):
        floor_t.append(forward_floor(model, x, 2 * len(PCTS) * n_layers, args.batch_size))
        with Clock() as clock:
            # one trial, as the reference scores once (camanim adds the chance baseline's 2 x 4 images)
            result = ybroad(model, x, cams, target, layer_names=layers, percentiles=PCTS, score=args.score,
                            noise=0.0, batch_size=args.batch_size, trials=1)
        ours_t.append(clock)
        if before_ybroad is not None:
            with Clock() as clock:
                before = before_ybroad(model, x, cams, target, layer_names=layers, percentiles=PCTS,
                                       score=args.score, noise=0.0, batch_size=args.batch_size, trials=1)
            before_t.append(clock)
    if before is not None and result is not None:
        print("before:")
        report_ours_floor(before_t, floor_t, n_layers)
        gap = max(float((result.morf - before.morf).abs().max()), float((result.lerf - before.lerf).abs().max()))
        print(f"max |Δ score| after vs before: {gap:.1e}; after:")
    assert result is not None and bool(result.defined.all()), "every benchmark CAM should be defined"
    ours = min(ours_t, key=lambda c: c.wall)
    floor = min(floor_t, key=lambda c: c.wall)
    if args.no_ref:
        report_ours_floor(ours_t, floor_t, n_layers)
        return

    # (a) on a sample of layers.
    sample = np.unique(np.linspace(0, n_layers - 1, min(args.ref_layers, n_layers)).round().astype(int))
    make_target = ClassifierOutputSoftmaxTarget if args.score == "prob" else ClassifierOutputTarget
    ref_road.NoisyLinearImputer = _NoiseFreeImputer  # noise 0, as for ours
    # Ours again on the sample with batch 1, as the reference runs the model: float32 convolutions
    # round differently per batch size, which is most of the difference at batch 8.
    ours_b1 = ybroad(model, x, cams[sample], target, percentiles=PCTS, score=args.score, noise=0.0, batch_size=1,
                     trials=1)
    ref_t: list[Clock] = []
    diffs, diffs_b1, per_pct = [], [], []
    for j, i in enumerate(sample):
        with Clock() as clock:
            ref = reference_road(model, x, cams[i].numpy(), make_target(target))
        ref_t.append(clock)
        diffs.append(max(np.abs(result.morf[0, i].numpy() - ref["morf"]).max(),
                         np.abs(result.lerf[0, i].numpy() - ref["lerf"]).max()))
        per_pct.append(np.maximum(np.abs(ours_b1.morf[0, j].numpy() - ref["morf"]),
                                  np.abs(ours_b1.lerf[0, j].numpy() - ref["lerf"])))
        diffs_b1.append(per_pct[-1].max())
        print(f"  ref layer {i:2d} {layers[i]:<24s} {clock.wall:6.2f} s (cpu {clock.cpu:6.2f})  "
              f"ROAD ours {float(result.curve_mean[i]):+.5f} ref "
              f"{float(((ref['lerf'] - ref['morf']) / 2).mean()):+.5f}  max |Δ C| {diffs[-1]:.1e} "
              f"(ours at batch 1: {diffs_b1[-1]:.1e})")
    ref_wall = statistics.median(c.wall for c in ref_t)
    ref_cpu = statistics.median(c.cpu for c in ref_t)

    print()
    print("| per layer | wall s | CPU s |")
    print("|---|---|---|")
    print(f"| (a) pytorch-grad-cam (median of {len(ref_t)} layers) | {ref_wall:.3f} | {ref_cpu:.3f} |")
    print(f"| (b) camanim ybroad ({n_layers} layers) | {ours.wall / n_layers:.3f} | {ours.cpu / n_layers:.3f} |")
    print(f"| (c) forward floor ({8 * n_layers} images) | {floor.wall / n_layers:.3f} | {floor.cpu / n_layers:.3f} |")
    print()
    print(f"(b) runs, wall: {', '.join(f'{c.wall:.2f}' for c in ours_t)} s; "
          f"(c) runs, wall: {', '.join(f'{c.wall:.2f}' for c in floor_t)} s (fastest used)")
    print(f"(a)/(b) per layer: {ref_wall / (ours.wall / n_layers):.2f}x wall, "
          f"{ref_cpu / (ours.cpu / n_layers):.2f}x CPU  (goal >= 3)")
    print(f"(b)/(c):           {ours.wall / floor.wall:.2f} wall, {ours.cpu / floor.cpu:.2f} CPU  (issue 15's goal <= 1.25)")
    print(f"max |Δ score| vs pytorch-grad-cam, {len(sample)} layers x 8 perturbations: {max(diffs):.1e} "
          f"(at batch {args.batch_size}), {max(diffs_b1):.1e} (at batch 1)")
    # Where the two differ: pytorch-grad-cam keeps the pixels below np.percentile(cam, 100 - p),
    # i.e. ceil((N-1)(100-p)/100) of them, while we remove round(p/100 * N).
    n_pix = cams.shape[1] * cams.shape[2]
    cam0 = cams[0].numpy()
    worst = np.max(per_pct, axis=0)
    for p, d in zip(PCTS, worst, strict=True):
        ref_k = n_pix - int((cam0 < np.percentile(cam0, 100 - p)).sum())
        print(f"  {p}% removed: pixels removed ours {round(p / 100 * n_pix)}, pytorch-grad-cam {ref_k}; "
              f"max |Δ C| at batch 1 {d:.1e}")
    if hasattr(os, "getloadavg"):
        print(f"1-minute load average at the end: {os.getloadavg()[0]:.2f} (on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
