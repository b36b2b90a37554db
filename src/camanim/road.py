"""ybROAD: the ROAD faithfulness score of every layer's CAM, as one curve over the network.

ROAD (Remove And Debias; Rong et al., 2022, https://arxiv.org/abs/2202.00449)
removes pixels in the order a CAM ranks them, fills them in by noisy linear
imputation (see :mod:`camanim._imputation`) and measures how the model's score
for the target class changes. For a fraction ``p`` of pixels removed:

* MoRF (most relevant first) removes the ``k = round(p/100 * H*W)`` pixels with
  the highest CAM values, LeRF (least relevant first) the ``k`` lowest. Exactly
  ``k`` pixels, ties broken by a stable sort (lower flat index first), so CAMs
  with many equal values (ReLU zeros) still remove the requested amount.
* ``C = f(perturbed) - f(original)``, with ``f`` the target's softmax
  probability (``score="prob"``) or its logit (``score="logit"``).
* ``ROAD_p = (C_LeRF - C_MoRF) / 2``: high when removing what the CAM calls
  important hurts and removing what it calls unimportant does not.

A layer's score is the mean of ``ROAD_p`` over the percentages; the series over
layers is ybROAD (CAManim paper, "Quantitative Evaluation"), summarised by its
maximum (``ybroad_max``) and mean (``ybroad_mean``).

Relation to pytorch-grad-cam: its ``ROADMostRelevantFirst(percentile=q)`` and
``ROADLeastRelevantFirst(percentile=q)`` *keep* ``q`` percent (thresholding at the
``q``-th percentile), so our ``p`` equals its ``100 - q``; with
``ClassifierOutputSoftmaxTarget`` its scores are our ``"prob"`` scores, with
``ClassifierOutputTarget`` our ``"logit"`` ones. On CAMs without ties and with
noise 0 both give the same numbers (checked in ``tests/test_road.py``) whenever
both remove the same number of pixels: its threshold keeps
``ceil((N-1) * q / 100)`` of ``N`` pixels, which can differ from ours by one
(at 224x224 it removes 10036 and 20071 pixels at 20% and 40%, we 10035 and 20070).

Randomness: trial ``t`` of a run with seed ``s`` draws the noise of the
perturbed image for a removal mask from ``numpy.random.default_rng((s, t, c))``,
``c`` the CRC-32 of the mask's packed bits. So a layer's numbers do not depend on
``batch_size``, on the other layers' CAMs, or on how many trials are run (trial 0
of ``trials=5`` is the whole of ``trials=1``); and layers whose CAMs remove the very
same pixels (a container and its last child, ``same_as``) get the very same
perturbed image, which is imputed and scored once, and so the same score.

Example:
    >>> res = ybroad(model, x, cams, target=281, layer_names=names)  # doctest: +SKIP
    >>> res.ybroad_max, res.ybroad_mean                                 # doctest: +SKIP
    >>> write_ybroad(Path("camanim-out"), res)                          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ._imputation import ImputationStream
from .trace import eval_mode, logits_of

__all__ = ["SCORES", "YbRoad", "YbRoadMax", "removal_masks", "write_ybroad", "ybroad"]

log = logging.getLogger(__name__)

SCORES: dict[str, str] = {
    "prob": "change in the target class's softmax probability, f(perturbed) - f(original)",
    "logit": "change in the target class's logit (pre-softmax output), f(perturbed) - f(original)",
}


class YbRoadMax(NamedTuple):
    """The best layer of a ybROAD curve."""

    value: float
    index: int
    name: str


@dataclass
class YbRoad:
    """ROAD scores of every layer's CAM for one image and target.

    Attributes:
        percentiles: Percent of pixels *removed*, e.g. ``(20, 40, 60, 80)``.
        score: ``"prob"`` or ``"logit"`` (see :data:`SCORES`).
        noise: Standard deviation of the imputation noise, in normalised input units.
        seed: Base seed of the noise (see the module docstring for the derivation).
        trials: Number of noise draws the scores were repeated with.
        layer_names: One name per layer.
        morf: ``[T, L, P]`` MoRF score change per trial, layer and percentage.
        lerf: ``[T, L, P]`` LeRF score change.
        combined: ``[T, L, P]`` ``(lerf - morf) / 2``.
        defined: ``[L]`` bool; False for non-spatial layers and CAMs without a
            ranking (constant or non-finite), whose scores are NaN.
    """

    percentiles: tuple[float, ...]
    score: str
    noise: float
    seed: int
    trials: int
    layer_names: list[str]
    morf: torch.Tensor
    lerf: torch.Tensor
    combined: torch.Tensor
    defined: torch.Tensor

    @property
    def curve(self) -> torch.Tensor:
        """``[T, L]`` per-trial ROAD of each layer: mean of ``combined`` over percentages."""
        return self.combined.mean(dim=-1)

    @property
    def curve_mean(self) -> torch.Tensor:
        """``[L]`` ybROAD: the trial mean of :attr:`curve` (NaN where undefined)."""
        return self.curve.mean(dim=0)

    @property
    def curve_std(self) -> torch.Tensor:
        """``[L]`` sample standard deviation of :attr:`curve` over trials (NaN when ``trials == 1``)."""
        if self.trials < 2:
            return torch.full_like(self.curve_mean, math.nan)
        return self.curve.std(dim=0, correction=1)

    @property
    def ybroad_max(self) -> YbRoadMax | None:
        """The defined layer with the highest trial-mean ROAD (first one on ties), or None if none is defined."""
        if not bool(self.defined.any()):
            return None
        masked = torch.where(self.defined, self.curve_mean, torch.tensor(-math.inf, dtype=self.curve_mean.dtype))
        index = int(torch.argmax(masked))
        return YbRoadMax(float(self.curve_mean[index]), index, self.layer_names[index])

    @property
    def ybroad_mean(self) -> float:
        """Mean of the trial-mean ROAD over defined layers (NaN if none is defined)."""
        if not bool(self.defined.any()):
            return math.nan
        return float(self.curve_mean[self.defined].mean())

    def to_json_dict(self) -> dict[str, Any]:
        """Plain-JSON view (trial means per percentage; ``None`` where a value is undefined)."""
        morf, lerf, comb = self.morf.mean(0), self.lerf.mean(0), self.combined.mean(0)
        mean, std = self.curve_mean, self.curve_std
        best = self.ybroad_max
        return {
            "percentiles": [_plain_number(p) for p in self.percentiles],
            "percent_meaning": "pixels removed",
            "score": self.score,
            "score_meaning": SCORES[self.score],
            "noise": self.noise,
            "seed": self.seed,
            "trials": self.trials,
            "layers": [
                {
                    "index": i,
                    "name": name,
                    "defined": bool(self.defined[i]),
                    "morf": [_json_float(v) for v in morf[i].tolist()],
                    "lerf": [_json_float(v) for v in lerf[i].tolist()],
                    "combined": [_json_float(v) for v in comb[i].tolist()],
                    "ybroad": _json_float(float(mean[i])),
                    "ybroad_std": _json_float(float(std[i])),
                }
                for i, name in enumerate(self.layer_names)
            ],
            "ybroad_max": None if best is None else {"value": best.value, "index": best.index, "name": best.name},
            "ybroad_mean": _json_float(self.ybroad_mean),
        }


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _plain_number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(value)


def _removed_count(percent: float, n_pixels: int) -> int:
    # Round half up (not Python's half-to-even): it matches pytorch-grad-cam's
    # percentile threshold on tie-free CAMs in the .5 cases too.
    return int(math.floor(percent / 100.0 * n_pixels + 0.5))


def removal_masks(cam: torch.Tensor, percentiles: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels ROAD removes for one CAM, MoRF and LeRF, at each percentage.

    Args:
        cam: ``(H, W)`` CAM.
        percentiles: Percent of pixels removed, each in ``[0, 100)``.

    Returns:
        ``(morf, lerf)``, each a ``(P, H, W)`` bool tensor, True where removed:
        exactly ``round(p/100 * H*W)`` pixels, the highest (MoRF) or lowest (LeRF)
        CAM values, equal values taken in flat-index order.

    Example:
        >>> morf, lerf = removal_masks(torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]), [50])
        >>> morf[0].int().tolist(), lerf[0].int().tolist()
        ([[1, 1, 0], [1, 0, 0]], [[1, 0, 1], [0, 1, 0]])
    """
    if not isinstance(cam, torch.Tensor) or cam.ndim != 2:
        raise TypeError("cam: expected a (H, W) tensor")
    flat = cam.detach().cpu().reshape(-1).numpy()
    ks = [_removed_count(p, flat.size) for p in _check_percentiles(percentiles, flat.size)]
    morf, lerf = (
        torch.from_numpy(np.stack(_masks_from_order(order, ks, flat.size))).reshape(len(ks), *cam.shape)
        for order in (np.argsort(-flat, kind="stable"), np.argsort(flat, kind="stable"))
    )
    return morf, lerf


def _masks_from_order(order: np.ndarray, ks: Sequence[int], n_pixels: int) -> list[np.ndarray]:
    out = []
    for k in ks:
        mask = np.zeros(n_pixels, dtype=bool)
        mask[order[:k]] = True
        out.append(mask)
    return out


def _check_percentiles(percentiles: Sequence[float], n_pixels: int) -> tuple[float, ...]:
    try:
        values = tuple(float(p) for p in percentiles)
    except (TypeError, ValueError) as exc:
        raise TypeError("percentiles: expected a sequence of numbers") from exc
    if not values:
        raise ValueError("percentiles: give at least one percentage")
    for p in values:
        if not 0.0 <= p < 100.0:
            raise ValueError(f"percentiles: {p:g} is outside [0, 100) (percent of pixels removed)")
        if _removed_count(p, n_pixels) >= n_pixels:
            raise ValueError(f"percentiles: {p:g}% removes every pixel of a {n_pixels}-pixel image")
    return values


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def _one_thread_per_stream(on_cpu: bool) -> Iterator[None]:
    """On the CPU, every torch op single-threaded while ybROAD runs (restored after): the cores are
    shared by whole forward passes and imputation solves instead, which wastes no time in OpenMP
    barriers when the two compete for a core."""
    original = torch.get_num_threads()
    if on_cpu:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != original:
            torch.set_num_threads(original)


class _PackedMasks(Sequence[np.ndarray]):
    """Bit-packed masks, unpacked on access: a few KB each instead of one byte per pixel."""

    def __init__(self, packed: list[np.ndarray], n_pixels: int) -> None:
        self.packed, self.n_pixels = packed, n_pixels

    def __len__(self) -> int:
        return len(self.packed)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        return np.unpackbits(self.packed[i], count=self.n_pixels).astype(bool)


class _Scorer:
    """Target score of batches of images, under inference mode."""

    def __init__(self, model: nn.Module, target: int, score: str, device: torch.device,
                 output_key: str | int | None = None) -> None:
        self.model, self.target, self.score, self.device = model, target, score, device
        self.output_key = output_key

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = logits_of(self.model(images.to(self.device)), self.output_key)
        if out.ndim != 2 or out.shape[0] != images.shape[0]:
            raise ValueError("model: expected its output to be a (batch, classes) tensor of logits")
        if not 0 <= self.target < out.shape[1]:
            raise ValueError(f"target: {self.target} is not a class index of a {out.shape[1]}-class output")
        out = out.detach().to("cpu", torch.float64)
        if self.score == "prob":
            out = out.softmax(dim=1)
        return out[:, self.target]


def ybroad(
    model: nn.Module,
    input_tensor: torch.Tensor,
    cams: torch.Tensor,
    target: int,
    *,
    layer_names: Sequence[str] | None = None,
    non_spatial: Sequence[bool] | None = None,
    percentiles: Sequence[float] = (20, 40, 60, 80),
    score: str = "prob",
    noise: float = 0.01,
    seed: int = 0,
    trials: int = 1,
    batch_size: int = 32,
    output_key: str | int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> YbRoad:
    """ROAD score of every layer's CAM (ybROAD).

    Each distinct removal mask is imputed once (masks shared by several layers,
    and by all trials, are solved once) and each of its noisy images scored once,
    on background threads while the model scores finished images in batches of
    ``batch_size``. The model runs in eval
    mode under ``torch.inference_mode``; its train/eval flags are restored.

    Args:
        model: Classifier returning ``(batch, classes)`` logits.
        input_tensor: ``(1, C, H, W)`` model input, already normalised.
        cams: ``[L, H, W]`` raw CAMs at input size (any scale; only the ranking matters).
        target: Class index scored.
        layer_names: One name per CAM; defaults to ``"0"``, ``"1"``, ...
        non_spatial: Per CAM, True when its layer has no spatial map (its score is undefined).
        percentiles: Percent of pixels removed, each in ``[0, 100)``.
        score: ``"prob"`` (softmax probability, default) or ``"logit"``.
        noise: Standard deviation of the Gaussian noise added to imputed pixels.
        seed: Non-negative base seed of the noise.
        trials: Number of noise draws to repeat the scoring with.
        batch_size: Perturbed images per forward pass.
        output_key: Where the logits are in a tuple/dict/dataclass model output (as for ``animate``).
        progress: Called as ``progress(done, total)`` perturbed images, first with ``done=0``.

    Returns:
        A :class:`YbRoad`.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument has a bad value or shape, or the model output is not ``(batch, classes)``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError("model: expected a torch.nn.Module")
    if not isinstance(input_tensor, torch.Tensor) or not isinstance(cams, torch.Tensor):
        raise TypeError("input_tensor, cams: expected torch tensors")
    if input_tensor.ndim != 4 or input_tensor.shape[0] != 1:
        raise ValueError(f"input_tensor: expected shape (1, C, H, W), got {tuple(input_tensor.shape)}")
    _, channels, height, width = input_tensor.shape
    if cams.ndim != 3 or tuple(cams.shape[1:]) != (height, width):
        raise ValueError(f"cams: expected shape [L, {height}, {width}], got {tuple(cams.shape)}")
    n_layers, n_pixels = cams.shape[0], height * width
    names = [str(i) for i in range(n_layers)] if layer_names is None else [str(n) for n in layer_names]
    flags = [False] * n_layers if non_spatial is None else [bool(f) for f in non_spatial]
    if len(names) != n_layers or len(flags) != n_layers:
        raise ValueError(f"layer_names, non_spatial: expected {n_layers} entries, one per CAM")
    pcts = _check_percentiles(percentiles, n_pixels)
    if score not in SCORES:
        raise ValueError(f"score: expected one of {sorted(SCORES)}, got {score!r}")
    for name, value, low in (("target", target, 0), ("seed", seed, 0), ("trials", trials, 1),
                             ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name}: expected an int")
        if value < low:
            raise ValueError(f"{name}: expected at least {low}, got {value}")
    if not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise: expected a finite value >= 0, got {noise}")

    # Masks: one list of distinct masks (packed, to stay small for hundreds of
    # layers) and, for each, the (layer, direction, percentage) jobs using it.
    ks = [_removed_count(p, n_pixels) for p in pcts]
    cams_np = cams.detach().cpu().reshape(n_layers, n_pixels).numpy()
    defined = torch.zeros(n_layers, dtype=torch.bool)
    unique: dict[bytes, int] = {}
    packed: list[np.ndarray] = []
    jobs: list[list[tuple[int, int, int]]] = []
    for layer in range(n_layers):
        cam = cams_np[layer]
        if flags[layer] or not np.isfinite(cam).all() or cam.min() == cam.max():
            continue
        defined[layer] = True
        for direction, order in enumerate((np.argsort(-cam, kind="stable"), np.argsort(cam, kind="stable"))):
            for i, mask in enumerate(_masks_from_order(order, ks, n_pixels)):
                bits = np.packbits(mask)
                key = bits.tobytes()
                if key not in unique:
                    unique[key] = len(packed)
                    packed.append(bits)
                    jobs.append([])
                jobs[unique[key]].append((layer, direction, i))
    log.debug("ybroad: %d layers defined, %d distinct masks for %d jobs", int(defined.sum()), len(packed),
              sum(map(len, jobs)))

    shape = (trials, n_layers, len(pcts))
    deltas = torch.full((2, *shape), math.nan, dtype=torch.float64)  # [MoRF/LeRF, T, L, P]
    total = trials * len(jobs)
    clean = input_tensor.detach()[0].to("cpu")
    flat_clean = clean.reshape(channels, n_pixels)

    with eval_mode(model):
        scorer = _Scorer(model, target, score, input_tensor.device, output_key)
        base = float(scorer(input_tensor)[0])
        if progress is not None:
            progress(0, total)
        # On the CPU, single-threaded forward passes on every core, beside the imputation solver
        # (the model and the solver share the cores); on a GPU, one stream of batches.
        on_cpu = input_tensor.device.type == "cpu"
        cores = _cores()
        streams = cores if on_cpu else 1
        solvers = max(1, cores // 4) if on_cpu else max(1, min(8, cores))
        stream = ImputationStream(clean, _PackedMasks(packed, n_pixels), workers=solvers,
                                  lookahead=64 if on_cpu else 4)
        forwards = ThreadPoolExecutor(max_workers=streams)
        batch: list[torch.Tensor] = []
        where: list[tuple[int, int]] = []
        in_flight: list[tuple[Future[torch.Tensor], list[tuple[int, int]]]] = []
        done = 0

        def collect(keep: int) -> None:
            """Record the scores of finished batches, oldest first, until at most ``keep`` are in flight."""
            nonlocal done
            while len(in_flight) > keep:
                fut, places = in_flight.pop(0)
                for (t, u), value in zip(places, fut.result().tolist(), strict=True):
                    for layer, direction, i in jobs[u]:
                        deltas[direction, t, layer, i] = value - base
                done += len(places)
                if progress is not None:
                    progress(done, total)

        def flush() -> None:
            images = torch.stack(batch).reshape(len(batch), channels, height, width)
            in_flight.append((forwards.submit(scorer, images), list(where)))
            batch.clear()
            where.clear()
            # while the solvers work, they keep their cores: fewer forward passes at a time
            collect(max(1, streams - solvers) if on_cpu and stream.solving else streams)

        try:
            # the stream's exit stops the solver threads at once if scoring fails midway
            with stream, _one_thread_per_stream(on_cpu):
                for u, values in enumerate(stream):
                    idx = torch.from_numpy(np.flatnonzero(np.unpackbits(packed[u], count=n_pixels)))
                    crc = zlib.crc32(packed[u].tobytes())
                    for t in range(trials):
                        filled = values
                        if noise > 0 and values.size:
                            rng = np.random.default_rng((seed, t, crc))
                            filled = values + noise * rng.standard_normal(values.shape)
                        image = flat_clean.clone()
                        image[:, idx] = torch.from_numpy(filled).to(image.dtype)
                        batch.append(image)
                        where.append((t, u))
                        if len(batch) == batch_size:
                            flush()
                if batch:
                    flush()
                collect(0)
        finally:
            for fut, _ in in_flight:
                fut.cancel()
            forwards.shutdown(wait=True)

    morf, lerf = deltas[0], deltas[1]
    return YbRoad(
        percentiles=pcts, score=score, noise=float(noise), seed=seed, trials=trials, layer_names=names,
        morf=morf, lerf=lerf, combined=(lerf - morf) / 2, defined=defined,
    )


# ---------------------------------------------------------------------------- files

def write_ybroad(out_dir: Path, result: YbRoad) -> dict[str, Path]:
    """Write ``ybroad.csv``, ``ybroad.json`` and ``ybroad.png`` into ``out_dir``.

    The CSV has one row per layer: ``index, name, defined``, then for each
    percentage ``morf_p, lerf_p, combined_p`` (trial means), then ``ybroad`` (mean
    over percentages) and ``ybroad_std`` (over trials); undefined values are empty.
    The JSON is :meth:`YbRoad.to_json_dict` (``null`` for undefined values). The
    PNG plots the curve over layers, a one-std band when ``trials > 1`` and the
    best layer.

    Args:
        out_dir: Directory, created if missing.
        result: What :func:`ybroad` returned.

    Returns:
        ``{"csv": path, "json": path, "png": path}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "ybroad.csv", "json": out_dir / "ybroad.json", "png": out_dir / "ybroad.png"}
    data = result.to_json_dict()
    with paths["json"].open("w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, allow_nan=False)
        fh.write("\n")
    _write_csv(paths["csv"], result, data)
    _write_png(paths["png"], result)
    return paths


def _write_csv(path: Path, result: YbRoad, data: dict[str, Any]) -> None:
    labels = [f"{p:g}" for p in result.percentiles]
    header = ["index", "name", "defined"]
    for p in labels:
        header += [f"morf_{p}", f"lerf_{p}", f"combined_{p}"]
    header += ["ybroad", "ybroad_std"]

    def cell(v: float | None) -> str:
        return "" if v is None else repr(float(v))

    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for layer in data["layers"]:
            row = [layer["index"], layer["name"], layer["defined"]]
            for j in range(len(labels)):
                row += [cell(layer["morf"][j]), cell(layer["lerf"][j]), cell(layer["combined"][j])]
            row += [cell(layer["ybroad"]), cell(layer["ybroad_std"])]
            writer.writerow(row)


def _tick_positions(n: int, max_labels: int = 40) -> np.ndarray:
    """At most ``max_labels`` evenly spaced layer indices, always starting at 0."""
    step = max(1, math.ceil(n / max_labels))
    return np.arange(0, n, step)


def _short(name: str, limit: int = 28) -> str:
    # Keep the tail: it names the layer, the head repeats the block path.
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


def _write_png(path: Path, result: YbRoad) -> None:
    # The figure API with the Agg canvas: no pyplot state, no GUI backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(result.layer_names)
    x = np.arange(n)
    mean = result.curve_mean.numpy()
    ticks = _tick_positions(n)
    fig = Figure(figsize=(min(16.0, max(7.0, 4.0 + 0.25 * len(ticks))), 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.axhline(0.0, color="0.6", lw=0.8)
    if result.trials > 1:
        std = result.curve_std.numpy()
        ax.fill_between(x, mean - std, mean + std, color="#d4a017", alpha=0.3, lw=0,
                        label=f"±1 std over {result.trials} trials")
    ax.plot(x, mean, color="#b8860b", lw=1.5, marker="o" if n <= 80 else None, ms=3, label="ROAD per layer")
    undefined = np.flatnonzero(~result.defined.numpy())
    if undefined.size:
        ax.plot(undefined, np.zeros(undefined.size), ls="none", marker="x", ms=4, color="0.5",
                label="no score (non-spatial or constant CAM)")
    best = result.ybroad_max
    if best is not None:
        ax.plot([best.index], [best.value], marker="*", ms=15, color="crimson", ls="none",
                label=f"ybROAD_max {best.value:.3g}")
        # The best layer is the top of the curve: a fifth of the height is left free above it for its
        # name, pinned inside the axes so it never reaches the title; near either end it is aligned inwards.
        low, high = ax.get_ylim()
        ax.set_ylim(low, low + (high - low) / 0.8)
        ha = "left" if best.index < 0.15 * n else "right" if best.index > 0.85 * n else "center"
        ax.text(best.index, 0.97, _short(best.name, 40), transform=ax.get_xaxis_transform(), ha=ha, va="top",
                fontsize=8, color="crimson")
        title = f"ybROAD: max {best.value:.3g} at {_short(best.name, 40)}, mean {result.ybroad_mean:.3g}"
    else:
        title = "ybROAD: no layer has a defined ROAD score"
        ax.text(0.5, 0.5, "no spatial layer with a ranking CAM", transform=ax.transAxes, ha="center")
    pct = ", ".join(f"{p:g}" for p in result.percentiles)
    ax.set_title(f"{title}\n(removed {pct}% of pixels; noise {result.noise:g})", fontsize=10)
    ax.set_xticks(ticks)
    ax.set_xticklabels([_short(result.layer_names[i]) for i in ticks], rotation=90, fontsize=7)
    ax.set_xlim(-0.5, max(n - 0.5, 0.5))
    ax.set_xlabel("layer")
    ax.set_ylabel("ROAD = (C_LeRF − C_MoRF) / 2,  C = Δ " + ("probability" if result.score == "prob" else "logit"))
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.savefig(path, dpi=120)
