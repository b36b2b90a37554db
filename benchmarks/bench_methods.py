"""ScoreCAM over every layer: camanim against pytorch-grad-cam layer by layer, and the floor.

ResNet18 (random weights, seed 0, in-place ops made out of place so that pytorch-grad-cam reads
the activations it means to) on skimage's cat photo at 224x224, every layer (``--layers all``):

(a) camanim: one trace, then ``ScoreCAM.cam_batch`` for all layers at once: the masked inputs of
    every channel of every layer packed into batches of ``--batch-size`` (channels-last on CPU,
    inference mode), layers that share an output tensor (``same_as``) computed once, constant
    channels scored by one zero-image forward, and channels whose min-max scaled map equals an
    earlier channel's (BatchNorm after a convolution) sharing that channel's score;
(b) pytorch-grad-cam's ``ScoreCAM`` called layer by layer (its default batch of 16) on a sample of
    ``--ref-layers`` modules, timed and extrapolated per channel to every distinct module
    (``--full-reference`` runs them all); its raw maps are compared with (a)'s;
(c) the floor: nothing but the masked forwards (a) runs, batched the same way, timed on
    ``--floor-batches`` batches before and after (a) and extrapolated per image; and the
    "no-sharing" floor, one masked forward per channel of every layer.

Then DenseNet161 (the paper's 2,275 s ScoreCAM, on a GPU): its channel count over all layers is
traced, the masks it shares are counted, and its batched forward is timed on ``--dense-batches``
batches, which gives the extrapolated ScoreCAM time on this machine.

Wall and process-CPU seconds are both given: on a shared machine the CPU seconds are the steadier.

Run from the repository root:

    .venv/bin/python benchmarks/bench_methods.py                       # ~30 min on 2 cores
    .venv/bin/python benchmarks/bench_methods.py --size 64 --full-reference --no-densenet   # checks the extrapolation
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
import types
import warnings
from pathlib import Path

import numpy as np
import pytorch_grad_cam.score_cam
import torch
import torchvision
from PIL import Image
from pytorch_grad_cam import ScoreCAM as RefScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from camanim.compute.maps import layer_cams, upsample  # noqa: E402
from camanim.methods import MethodContext, get_method  # noqa: E402
from camanim.methods.perturbation import SameMaps, ScoreCAM  # noqa: E402
from camanim.trace import run_trace  # noqa: E402

DEFAULT_REF_LAYERS = "conv1,layer1.0.bn1,layer2.0.conv2,layer2.0.downsample.0,layer3.1.relu,layer4.0.conv1"


class Clock:
    """Wall and process CPU seconds of a block."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def out_of_place(model: nn.Module) -> nn.Module:
    """No in-place ReLU and no ``out += identity``: pytorch-grad-cam keeps a layer's output tensor on CPU,
    and a later in-place op would overwrite it (its BatchNorm maps would then be ReLU'd); camanim clones."""
    from torchvision.models import resnet

    def basic_forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)

    resnet.BasicBlock.forward = basic_forward
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    return model


def cat_input(size: int) -> torch.Tensor:
    """skimage's cat photo, resized and ImageNet-normalised, as (1, 3, size, size)."""
    from skimage import data

    img = Image.fromarray(data.chelsea()).resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(img)).permute(2, 0, 1).float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    return ((x - mean) / std)[None]


def per_image_floor(model: nn.Module, x: torch.Tensor, batches: int, batch_size: int) -> tuple[float, float]:
    """Seconds (wall, cpu) per image of bare batched forwards, as ScoreCAM runs them (channels-last, inference)."""
    batch = x.expand(batch_size, -1, -1, -1).contiguous(memory_format=torch.channels_last)
    batch = batch * torch.rand(batch_size, 1, *x.shape[-2:], generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        model(batch)  # warm-up: allocations and kernels for this batch shape
        with Clock() as c:
            for _ in range(batches):
                model(batch.contiguous(memory_format=torch.channels_last))
    n = batches * batch_size
    return c.wall / n, c.cpu / n


def per_image_ab(model: nn.Module, x: torch.Tensor, batch_size: int, rounds: int = 3,
                 images: int = 128) -> tuple[float, float]:
    """Median seconds (cpu) per image: pytorch-grad-cam's way (batches of 16, contiguous, no_grad) and
    camanim's (batches of ``batch_size``, channels-last, inference mode), measured in alternation so
    that other jobs on the machine slow both alike."""
    def run(bs: int, ours: bool) -> float:
        batch = x.expand(bs, -1, -1, -1).contiguous(memory_format=torch.channels_last if ours else
                                                     torch.contiguous_format)
        with torch.inference_mode() if ours else torch.no_grad():
            model(batch)
            with Clock() as c:
                for _ in range(max(1, images // bs)):
                    model(batch)
        return c.cpu / (max(1, images // bs) * bs)

    ref, mine = [], []
    for _ in range(rounds):
        ref.append(run(16, False))
        mine.append(run(batch_size, True))
    return statistics.median(ref), statistics.median(mine)


def reference_layer(model: nn.Module, x: torch.Tensor, module: nn.Module, target: int) -> tuple[np.ndarray, Clock]:
    """pytorch-grad-cam's ScoreCAM for one layer: raw map (after ReLU, before scaling) and its time."""
    cam = RefScoreCAM(model=model, target_layers=[module])
    captured = []
    original = cam.get_cam_image

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        captured.append(np.maximum(out, 0))
        return out

    cam.get_cam_image = spy
    with Clock() as clock, cam:
        cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])
    return captured[0][0], clock


def spatial_channels(records) -> int:
    return sum(r.shape[1] for r in records if not r.non_spatial and r.same_as is None)


def shared_masks(tr) -> tuple[int, int]:
    """(constant channels, channels sharing an earlier channel's mask) over the trace's layers."""
    acts = [a.float() for a, r in zip(tr.activations, tr.records) if not r.non_spatial and r.same_as is None]
    same = SameMaps(acts, [torch.tensor([0])], ScoreCAM.share_tolerance)
    constant = shared = offset = 0
    for j, a in enumerate(acts):
        flat = torch.nan_to_num(a[0]).flatten(1)
        const = flat.amax(1) == flat.amin(1)
        constant += int(const.sum())
        shared += sum(hit is not None for _, hit in same.match(j, 0, flat, const, offset))
        offset += a.shape[1]
    return constant, shared


def fmt(c: Clock | tuple[float, float]) -> str:
    wall, cpu = (c.wall, c.cpu) if isinstance(c, Clock) else c
    return f"{wall:9.1f} s wall {cpu:9.1f} s cpu"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=8, help="camanim's batch (its CPU default) [8]")
    ap.add_argument("--ref-layers", default=DEFAULT_REF_LAYERS, help="modules timed with pytorch-grad-cam")
    ap.add_argument("--full-reference", action="store_true", help="time pytorch-grad-cam on every module")
    ap.add_argument("--floor-batches", type=int, default=6, help="batches timed for the floor, before and after")
    ap.add_argument("--no-densenet", action="store_true")
    ap.add_argument("--no-resnet", action="store_true", help="only the DenseNet161 extrapolation")
    ap.add_argument("--dense-batches", type=int, default=2)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    # pytorch-grad-cam's progress bars, off (they only print)
    pytorch_grad_cam.score_cam.tqdm = types.SimpleNamespace(tqdm=lambda it, *a, **k: it)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, ResNet18 at {args.size} px, "
          f"batch {args.batch_size}")

    x = cat_input(args.size)
    if not args.no_resnet:
        resnet(args, x)
    if not args.no_densenet:
        densenet(args, x)


def resnet(args: argparse.Namespace, x: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = out_of_place(torchvision.models.resnet18(weights=None)).eval()
    # The layers and the target first (a cheap pass), so that the reference's sampled modules can be
    # timed both before and after (a) and averaged: this shared machine's speed drifts over minutes.
    first = run_trace(model, x, "all", gradients=False)
    target = int(first.targets[0])
    modules = dict(model.named_modules())
    ref_modules: dict[str, int] = {}
    index_of: dict[str, int] = {}
    for i, r in enumerate(first.records):
        if not r.non_spatial and r.call == 1:
            ref_modules.setdefault(r.module, r.shape[1])
            index_of.setdefault(r.module, i)
    del first
    names = list(ref_modules) if args.full_reference else [n.strip() for n in args.ref_layers.split(",")]
    before = {n: reference_layer(model, x, modules[n], target) for n in names}
    floor_before = per_image_floor(model, x, args.floor_batches, args.batch_size)

    # (a) camanim
    with Clock() as ours:
        tr = run_trace(model, x, "all", gradients=False)
        ctx = MethodContext(model=model, input_tensor=x, targets=tr.targets, batch_size=args.batch_size)
        per_layer = layer_cams(tr, get_method("scorecam"), ctx)
        upsample(per_layer, (args.size, args.size))
    floor_after = per_image_floor(model, x, args.floor_batches, args.batch_size)
    after = {n: reference_layer(model, x, modules[n], target) for n in names}
    floor = (statistics.mean([floor_before[0], floor_after[0]]), statistics.mean([floor_before[1], floor_after[1]]))
    channels = spatial_channels(tr.records)
    all_records = sum(r.shape[1] for r in tr.records if not r.non_spatial)
    rows = ctx.forward_rows
    print(f"\nlayers: {len(tr.records)} records, {sum(not r.non_spatial for r in tr.records)} spatial, "
          f"{sum(r.same_as is not None for r in tr.records)} same_as")
    print(f"channels: {all_records} over spatial records, {channels} without same_as records; "
          f"{ctx.extra.get('scorecam_shared_masks', 0)} share an earlier channel's mask; "
          f"masked forwards run: {rows} images in {ctx.forwards} batches")
    print(f"(a) camanim ScoreCAM, all layers       {fmt(ours)}")
    floor_ours = (floor[0] * rows, floor[1] * rows)
    floor_naive = (floor[0] * channels, floor[1] * channels)
    print(f"(c) floor: the {rows} masked forwards {fmt(floor_ours)}   (per image {floor[0] * 1e3:.1f} ms wall)")
    print(f"    floor without sharing ({channels})    {fmt(floor_naive)}")
    print(f"    camanim / floor: {ours.wall / floor_ours[0]:.2f} wall, {ours.cpu / floor_ours[1]:.2f} cpu")

    # (b) pytorch-grad-cam layer by layer
    t_wall = t_cpu = 0.0
    sample_channels = 0
    worst = 0.0
    for n in names:
        (ref, c1), (_, c2) = before[n], after[n]
        wall, cpu = (c1.wall + c2.wall) / 2, (c1.cpu + c2.cpu) / 2
        t_wall, t_cpu, sample_channels = t_wall + wall, t_cpu + cpu, sample_channels + ref_modules[n]
        mine = per_layer[index_of[n]][0].numpy()
        worst = max(worst, float(np.abs(mine - ref).max() / max(np.abs(ref).max(), 1e-12)))
        print(f"    pytorch-grad-cam {n:<24} {ref_modules[n]:4d} ch {wall:8.1f} s wall {cpu:8.1f} s cpu"
              f"  (before (a) {c1.wall:.1f} s, after {c2.wall:.1f} s)")
    ref_channels = sum(ref_modules.values())
    scale = ref_channels / sample_channels
    ref_total = (t_wall * scale, t_cpu * scale)
    how = "measured" if args.full_reference else f"extrapolated from {len(names)} modules, {sample_channels} ch"
    print(f"(b) pytorch-grad-cam, {len(ref_modules)} modules, {ref_channels} ch ({how}) {fmt(ref_total)}")
    print(f"    same results: max |camanim - pytorch-grad-cam| / max|ref| over the sampled layers = {worst:.2e}")
    print(f"    speed-up over pytorch-grad-cam: {ref_total[0] / ours.wall:.2f}x wall, {ref_total[1] / ours.cpu:.2f}x cpu")
    ref_img, our_img = per_image_ab(model, x, args.batch_size)
    print(f"    decomposition: forwards {ref_channels + len(ref_modules)} vs {rows} ({(ref_channels + len(ref_modules)) / rows:.2f}x); "
          f"cpu per image, alternating: batch 16 contiguous {ref_img * 1e3:.1f} ms, batch {args.batch_size} "
          f"channels-last {our_img * 1e3:.1f} ms ({ref_img / our_img:.2f}x) -> expected "
          f"{(ref_channels + len(ref_modules)) / rows * ref_img / our_img:.2f}x")


def trained_like_bn(model: nn.Module) -> nn.Module:
    """BatchNorm statistics and affine parameters as a trained network has them (seeded), not the identity."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data[torch.rand(n, generator=gen) < 0.1] *= -1  # a few negative gammas
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.3)
    return model


def densenet(args: argparse.Namespace, x: torch.Tensor) -> None:
    torch.manual_seed(0)
    dense = torchvision.models.densenet161(weights=None).eval()
    with Clock() as dtrace, torch.no_grad():
        dtr = run_trace(dense, x, "all", gradients=False)
    d_channels = spatial_channels(dtr.records)
    constant, shared = shared_masks(dtr)
    d_rows = d_channels - constant - shared + (constant > 0)
    del dtr
    with torch.no_grad():
        dtr = run_trace(trained_like_bn(copy.deepcopy(dense)), x, "all", gradients=False)
    t_constant, t_shared = shared_masks(dtr)
    t_rows = d_channels - t_constant - t_shared + (t_constant > 0)
    del dtr
    per = per_image_floor(dense, x, args.dense_batches, args.batch_size)
    print(f"\nDenseNet161 at {args.size} px: {d_channels} channels over all layers; {constant} constant, "
          f"{shared} share an earlier channel's mask -> {d_rows} masked forwards "
          f"(forward {per[0] * 1e3:.0f} ms/image wall, {args.dense_batches} batches of {args.batch_size})")
    est = (dtrace.wall + per[0] * d_rows, dtrace.cpu + per[1] * d_rows)
    print(f"    camanim ScoreCAM, all layers (extrapolated) {fmt(est)} = {est[0] / 3600:.2f} h wall")
    naive = (per[0] * d_channels, per[1] * d_channels)
    print(f"    without sharing masks (extrapolated)       {fmt(naive)} = {naive[0] / 3600:.2f} h wall")
    print(f"    batches: {math.ceil(d_rows / args.batch_size)}")
    t_est = (dtrace.wall + per[0] * t_rows, dtrace.cpu + per[1] * t_rows)
    print(f"    with trained-like BatchNorm statistics: {t_constant} constant, {t_shared} shared -> {t_rows} "
          f"masked forwards, {fmt(t_est)} = {t_est[0] / 3600:.2f} h wall")


if __name__ == "__main__":
    main()
