"""What layout evidence costs: one traced pass with and without ``LayoutEvidence``, side by side.

``run_trace(model, x, "all")`` (forward, backward, every layer's gradient) on models with random
weights (``torch.manual_seed(0)``), a 224x224 random input, one thread. Each pass is timed with the
evidence mode on (as camanim runs) and off (``camanim.trace.run.LayoutEvidence`` replaced by a mode
that does nothing), interleaved (ABBA), medians; the ratio on/off is the mode's cost. The layouts
of the two passes are compared too (they may differ only where the mode gave evidence).

Run from the repository root (2 cores: about 2 minutes):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_trace.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_trace.py --models resnet50 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import torch
import torchvision
from torch.overrides import TorchFunctionMode

import camanim.trace.run as trace_run
from camanim.trace import run_trace


class NoEvidence(TorchFunctionMode):
    """A mode that only passes each call on (the mode's own dispatch cost, no bookkeeping)."""

    def __init__(self, context: object) -> None:
        super().__init__()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


class Nothing:
    """No mode at all."""

    def __init__(self, context: object) -> None:
        pass

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name.startswith("timm:"):
        import timm

        return timm.create_model(name[5:], pretrained=False).eval()
    return getattr(torchvision.models, name)(weights=None).eval()


def _time(model: torch.nn.Module, x: torch.Tensor, mode: type) -> tuple[float, list[str]]:
    with mock.patch.object(trace_run, "LayoutEvidence", mode) if mode is not None else mock.patch.object(
            trace_run, "LayoutEvidence", trace_run.LayoutEvidence):
        t0 = time.perf_counter()
        tr = run_trace(model, x, "all")
        return time.perf_counter() - t0, [r.layout for r in tr.records]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50,densenet121,convnext_tiny,timm:vit_tiny_patch16_224")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    print("| model | layers | off (no mode) s | pass-through mode s | evidence s | evidence / off | layouts changed |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model = _model(name)
        _time(model, x, None)  # warm up
        runs: dict[str, list[float]] = {"off": [], "bare": [], "on": []}
        layouts: dict[str, list[str]] = {}
        order = ["on", "off", "bare", "bare", "off", "on"]
        for _ in range(args.repeats):
            for kind in order:
                secs, lay = _time(model, x, {"on": None, "off": Nothing, "bare": NoEvidence}[kind])
                runs[kind].append(secs)
                layouts[kind] = lay
            order.reverse()
        med = {k: statistics.median(v) for k, v in runs.items()}
        changed = sum(a != b for a, b in zip(layouts["on"], layouts["off"]))
        print(f"| {name} | {len(layouts['on'])} | {med['off']:.3f} | {med['bare']:.3f} | {med['on']:.3f} | "
              f"{med['on'] / med['off']:.2f} | {changed} |")


if __name__ == "__main__":
    main()
