"""ybROAD: the ROAD faithfulness score of every layer's CAM, as one curve over the network.

ROAD (Remove And Debias; Rong et al., 2022, https://arxiv.org/abs/2202.00449)
removes pixels in the order a CAM ranks them, fills them in by noisy linear
imputation (see :mod:`camanim.road.imputation`) and measures how the model's score
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
noise 0 both give the same numbers (checked in ``tests/road/test_metric.py``) whenever
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
import logging
import math
import os
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..trace import TargetHead, class_logits, class_scores, eval_mode, logits_of
from .imputation import ImputationStream
from .masks import PackedMasks, check_percentiles, masks_from_order, removed_count
from .options import DEFAULT_TRIALS, RoadOptions
from .stats import CONFIDENCE, mean_ci, prediction_band
from .verdict import aliases_of, chance_threshold, chance_warning, pass_through_notes, verdict

__all__ = ["SCORES", "YbRoad", "YbRoadMax", "ybroad"]

log = logging.getLogger(__name__)

SCORES: dict[str, str] = {
    "prob": "change in the target class's probability (the run's softmax, or sigmoid for one-logit and "
            "multi-label models), f(perturbed) - f(original)",
    "logit": "change in the target class's logit (pre-softmax output), f(perturbed) - f(original)",
    "value": "change in the value of the target defined on the model's output (a segmentation region's summed "
             "scores, a similarity, a user's target), f(perturbed) - f(original)",
}


#: What the y axis of a ybROAD plot reads for each score (any other score name is shown as ``Δ NAME``).
SCORE_LABELS: dict[str, str] = {"prob": "Δ probability", "logit": "Δ logit", "value": "Δ target value"}

#: The third entry of the seed of the chance baseline's random pixel rankings: ``(seed, trial, BASELINE_STREAM)``.
BASELINE_STREAM = 0x62617365  # "base"


def score_label(score: str) -> str:
    """The axis label of the change in ``score``: ``"Δ probability"`` for ``prob``, ``"Δ NAME"`` otherwise."""
    return SCORE_LABELS.get(score, f"Δ {score}")


class YbRoadMax(NamedTuple):
    """The best layer of a ybROAD curve."""

    value: float
    index: int
    name: str


@dataclass
class YbRoad:
    """ROAD scores of every layer's CAM for one image and target, with their chance baseline.

    Attributes:
        percentiles: Percent of pixels *removed*, e.g. ``(20, 40, 60, 80)``.
        score: the score whose change is measured (``"prob"``, ``"logit"``; see :data:`SCORES`).
        noise: Standard deviation of the imputation noise, in normalised input units.
        seed: Base seed of the noise (see the module docstring for the derivation).
        trials: Number of noise draws the scores were repeated with.
        layer_names: One name per layer.
        morf: ``[T, L, P]`` MoRF score change per trial, layer and percentage.
        lerf: ``[T, L, P]`` LeRF score change.
        combined: ``[T, L, P]`` ``(lerf - morf) / 2``.
        defined: ``[L]`` bool; False for non-spatial layers and CAMs without a
            ranking (constant or non-finite), whose scores are NaN.
        baseline_morf: ``[T, P]`` MoRF score change of the chance baseline: trial ``t`` removes pixels
            in the order of a random ranking drawn from ``(seed, t, BASELINE_STREAM)``; None if not run.
        baseline_lerf: ``[T, P]`` LeRF score change of the same random rankings.
        same_as: per layer, the earlier layer whose output (and so CAM) it shares, or None.
        notes: per layer, what a pass-through module carries (``"BatchNorm output, before activation"``).
        target_probability: the model's probability for the target on the clean input (``probability``).
        num_classes: the number of classes of the model's output (2 for a one-logit model).
        probability: which probability ``target_probability`` (and ``score="prob"``) is: ``"softmax"``,
            or ``"sigmoid"`` (``--score sigmoid``, multi-label and one-logit models).
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
    baseline_morf: torch.Tensor | None = None
    baseline_lerf: torch.Tensor | None = None
    same_as: list[int | None] | None = None
    notes: list[str | None] | None = None
    target_probability: float | None = None
    num_classes: int | None = None
    probability: str = "softmax"

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
    def curve_ci(self) -> tuple[np.ndarray, np.ndarray]:
        """``([L], [L])`` the 95% confidence interval of :attr:`curve_mean` over trials (Student t; NaN
        when ``trials == 1``)."""
        _, lo, hi = mean_ci(self.curve.numpy(), CONFIDENCE)
        return lo, hi

    @property
    def layer_same_as(self) -> list[int | None]:
        """:attr:`same_as`, or None for every layer when it was not given."""
        return list(self.same_as) if self.same_as is not None else [None] * len(self.layer_names)

    @property
    def layer_notes(self) -> list[str | None]:
        """:attr:`notes`, or None for every layer when they were not given."""
        return list(self.notes) if self.notes is not None else [None] * len(self.layer_names)

    @property
    def baseline_curve(self) -> np.ndarray | None:
        """``[T]`` ROAD of each trial's random ranking (mean over percentages), or None without a baseline."""
        if self.baseline_morf is None or self.baseline_lerf is None:
            return None
        return ((self.baseline_lerf - self.baseline_morf) / 2).mean(dim=-1).numpy()

    @property
    def baseline_band(self) -> tuple[float, float, float] | None:
        """The chance band ``(mean, low, high)``: where the ROAD of a random pixel ranking falls, 95 times
        in 100 (a Student-t prediction interval over the :attr:`trials` rankings; one ranking: its value)."""
        curve = self.baseline_curve
        return None if curve is None else prediction_band(curve, CONFIDENCE)

    @property
    def ybroad_max(self) -> YbRoadMax | None:
        """The best candidate: the defined layer with the highest trial-mean ROAD (first one on ties, so
        never a layer that only shares an earlier one's output), or None if none is defined."""
        if not bool(self.defined.any()):
            return None
        first = torch.tensor([s is None for s in self.layer_same_as], dtype=torch.bool)
        ok = self.defined & first if bool((self.defined & first).any()) else self.defined
        masked = torch.where(ok, self.curve_mean, torch.tensor(-math.inf, dtype=self.curve_mean.dtype))
        index = int(torch.argmax(masked))
        return YbRoadMax(float(self.curve_mean[index]), index, self.layer_names[index])

    @property
    def ybroad_mean(self) -> float:
        """Mean of the trial-mean ROAD over defined layers (NaN if none is defined)."""
        if not bool(self.defined.any()):
            return math.nan
        return float(self.curve_mean[self.defined].mean())

    @property
    def chance_warning(self) -> str | None:
        """The words for a target the model barely believes in (probability under 2 / num_classes), or None."""
        return chance_warning(self.target_probability, self.num_classes, self.probability)

    def verdict(self) -> dict[str, Any]:
        """The best candidate, the top 5, the layers above the chance band and the warnings
        (:func:`camanim.road.verdict.verdict`), as plain JSON."""
        band = self.baseline_band or (math.nan, math.nan, math.nan)
        warnings = [w for w in (self.chance_warning,) if w]
        if self.baseline_band is None:
            warnings.append("no chance baseline was computed: no layer can be said to beat random rankings")
        draws, remedy = self.curve.numpy(), None
        if self.noise == 0 and self.trials > 1:
            # without noise every trial imputes the same images: the trials are one draw repeated
            draws = draws[:1]
            remedy = (f"--road-noise 0 makes the {self.trials} trials one draw repeated; use a noise above 0 "
                      "for intervals")
        return verdict(draws, self.defined.tolist(), self.layer_names, self.layer_same_as,
                       self.layer_notes, band, unit="trials", warnings=warnings, remedy=remedy)

    def summary(self) -> dict[str, Any]:
        """What a run's ``manifest.json`` keeps of this result: the best layer, the mean, the settings, and
        the best candidate's statement and the warnings."""
        best = self.ybroad_max
        judged = self.verdict()
        return {
            "max": None if best is None else {"value": best.value, "index": best.index, "name": best.name},
            "mean": None if not math.isfinite(self.ybroad_mean) else float(self.ybroad_mean),
            "percentiles": list(self.percentiles), "score": self.score, "trials": self.trials, "seed": self.seed,
            "statement": judged["statement"], "warnings": judged["warnings"],
        }

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per layer, for a table: ``index`` (0-based), ``name``, ``ybroad`` (trial mean; None where
        undefined), ``ybroad_std``, ``ci_low``, ``ci_high``, ``morf_mean``, ``lerf_mean`` (over percentages),
        ``above_baseline`` (None without a baseline), ``same_as``."""
        mean, std = self.curve_mean.numpy(), self.curve_std.numpy()
        low, high = self.curve_ci
        morf, lerf = self.morf.mean(dim=(0, 2)).numpy(), self.lerf.mean(dim=(0, 2)).numpy()
        above = self.verdict()["above_baseline"]  # the same reading as ybroad.json's
        same_as = self.layer_same_as

        def num(v: float) -> float | None:
            return float(v) if math.isfinite(float(v)) else None

        return [{"index": i, "name": name, "ybroad": num(mean[i]), "ybroad_std": num(std[i]),
                 "ci_low": num(low[i]), "ci_high": num(high[i]), "morf_mean": num(morf[i]), "lerf_mean": num(lerf[i]),
                 "above_baseline": above[i],
                 "same_as": same_as[i]} for i, name in enumerate(self.layer_names)]

    def to_pandas(self) -> Any:
        """:meth:`to_rows` as a ``pandas.DataFrame`` indexed by layer name (pandas is optional).

        Raises:
            ImportError: pandas is not installed (``to_rows`` needs nothing).
        """
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("to_pandas() needs pandas (pip install pandas); to_rows() gives the same table as dicts"
                              ) from exc
        return pd.DataFrame(self.to_rows()).set_index("name")

    def plot(self, ax: Any = None) -> Any:
        """ybROAD per layer (trial mean) with its interval and the chance band, on ``ax`` (a matplotlib
        Axes) or on a new figure; returns the Axes. Layers are numbered from 1 on the x axis (whole
        numbers); the best layer is a star, or a hollow ring "not trusted" when :meth:`verdict` warns."""
        from matplotlib.ticker import MaxNLocator

        if ax is None:
            from matplotlib.figure import Figure

            ax = Figure(figsize=(8, 3), dpi=100, layout="constrained").add_subplot()
        x = np.arange(1, len(self.layer_names) + 1)
        mean = self.curve_mean.numpy()
        low, high = self.curve_ci
        ax.fill_between(x, low, high, color="#e2a400", alpha=0.25, linewidth=0, label="95% interval")
        band = self.baseline_band
        if band is not None:
            ax.axhspan(band[1], band[2], color="grey", alpha=0.2, label="chance band")
        ax.plot(x, mean, color="#e2a400", marker="o", markersize=2, label="ybROAD")
        best = self.ybroad_max
        if best is not None:
            where = f"layer {best.index + 1} ({best.name})"
            if self.verdict()["warnings"]:
                ax.plot([best.index + 1], [best.value], marker="o", markersize=10, markerfacecolor="none",
                        markeredgewidth=2, color="#c2410c", linestyle="none",
                        label=f"highest: {where}, not trusted (see verdict()['warnings'])")
            else:
                ax.plot([best.index + 1], [best.value], marker="*", markersize=12, color="#c2410c",
                        linestyle="none", label=f"best: {where}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer")
        ax.set_ylabel(f"ROAD ({self.score})")
        ax.legend(loc="best", fontsize=8)
        return ax

    def __repr__(self) -> str:
        best = self.ybroad_max
        at = "max=none" if best is None else f"max={best.value:.3g} at layer {best.index + 1} ({best.name})"
        warned = len(self.verdict()["warnings"])
        return (f"YbRoad({len(self.layer_names)} layers, score={self.score}, "
                f"percentiles={','.join(f'{p:g}' for p in self.percentiles)}, trials={self.trials}, {at}, "
                f"mean={self.ybroad_mean:.3g}" + (f", {warned} warning(s)" if warned else "") + ")")

    def to_json_dict(self) -> dict[str, Any]:
        """Plain-JSON view (trial means per percentage; ``None`` where a value is undefined).

        Keys: the settings; ``layers`` (per layer: ``morf``/``lerf``/``combined`` per percentage and their
        ``*_ci``, ``ybroad`` and ``ybroad_std``/``ybroad_ci``, ``morf_mean``/``lerf_mean`` over percentages
        with their ``*_ci``, ``same_as``, ``aliases``, ``note``, ``above_baseline``); ``baseline`` (the
        random rankings' scores and ``band``); ``candidates`` (top 5), ``best``, ``warnings``,
        ``statement``; ``target`` (probability, classes, the chance threshold); ``ybroad_max``, ``ybroad_mean``.
        """
        curve = self.curve.numpy()
        mean, std = self.curve_mean, self.curve_std
        ybroad_lo, ybroad_hi = self.curve_ci
        per_pct = {key: mean_ci(getattr(self, key).numpy()) for key in ("morf", "lerf", "combined")}
        over_pct = {key: mean_ci(getattr(self, key).mean(dim=-1).numpy()) for key in ("morf", "lerf")}
        best = self.ybroad_max
        judged = self.verdict()
        aliases = [[self.layer_names[j] for j in group] for group in aliases_of(self.layer_same_as)]
        notes, same_as = self.layer_notes, self.layer_same_as
        layers = []
        for i, name in enumerate(self.layer_names):
            entry: dict[str, Any] = {
                "index": i,
                "name": name,
                "defined": bool(self.defined[i]),
                **{key: [_json_float(v) for v in per_pct[key][0][i].tolist()] for key in ("morf", "lerf", "combined")},
                "ybroad": _json_float(float(mean[i])),
                "ybroad_std": _json_float(float(std[i])),
                "ybroad_ci": _pair(ybroad_lo[i], ybroad_hi[i]),
                **{f"{key}_ci": [_pair(lo, hi) for lo, hi in zip(per_pct[key][1][i], per_pct[key][2][i], strict=True)]
                   for key in ("morf", "lerf", "combined")},
                **{f"{key}_mean": _json_float(float(over_pct[key][0][i])) for key in ("morf", "lerf")},
                **{f"{key}_mean_ci": _pair(over_pct[key][1][i], over_pct[key][2][i]) for key in ("morf", "lerf")},
                "trials_ybroad": [_json_float(float(v)) for v in curve[:, i]],
                "same_as": same_as[i],
                "aliases": aliases[i],
                "note": notes[i],
                "above_baseline": judged["above_baseline"][i],
            }
            layers.append(entry)
        return {
            "percentiles": [_plain_number(p) for p in self.percentiles],
            "percent_meaning": "pixels removed",
            "score": self.score,
            "score_meaning": SCORES.get(self.score, self.score),
            "score_label": score_label(self.score),
            "noise": self.noise,
            "seed": self.seed,
            "trials": self.trials,
            "confidence": CONFIDENCE,
            "interval_meaning": f"{CONFIDENCE:.0%} confidence interval of the mean over the {self.trials} trials "
                                "(Student t); null with one trial",
            "layers": layers,
            "ybroad_max": None if best is None else {"value": best.value, "index": best.index, "name": best.name},
            "ybroad_mean": _json_float(self.ybroad_mean),
            "baseline": self._baseline_json(),
            "target": {"probability": _json_float(self.target_probability)
                       if self.target_probability is not None else None,
                       "probability_kind": self.probability,
                       "num_classes": self.num_classes,
                       "chance_threshold": chance_threshold(self.num_classes, self.probability)
                       if self.num_classes else None},
            "candidates": judged["candidates"],
            "best": judged["best"],
            "warnings": judged["warnings"],
            "statement": judged["statement"],
        }

    def _baseline_json(self) -> dict[str, Any] | None:
        if self.baseline_morf is None or self.baseline_lerf is None:
            return None
        band = self.baseline_band
        assert band is not None
        curve = self.baseline_curve
        assert curve is not None
        combined = (self.baseline_lerf - self.baseline_morf) / 2
        _, lo, hi = mean_ci(curve)
        return {
            "meaning": f"ROAD of {self.trials} random pixel rankings (trial t: ranking and noise from the seed), "
                       "an explanation that carries no information",
            "rankings": self.trials,
            "morf": [_json_float(v) for v in self.baseline_morf.mean(0).tolist()],
            "lerf": [_json_float(v) for v in self.baseline_lerf.mean(0).tolist()],
            "combined": [_json_float(v) for v in combined.mean(0).tolist()],
            "morf_mean": _json_float(float(self.baseline_morf.mean())),
            "lerf_mean": _json_float(float(self.baseline_lerf.mean())),
            "trials_ybroad": [_json_float(float(v)) for v in curve],
            "ybroad": _json_float(band[0]),
            "ybroad_ci": _pair(lo, hi),
            "band": [band[1], band[2]],
            "band_meaning": f"{CONFIDENCE:.0%} prediction interval of one random ranking's ROAD (Student t over "
                            f"the {self.trials} rankings; one ranking: its value)",
        }


def _pair(lo: float, hi: float) -> list[float] | None:
    lo, hi = float(lo), float(hi)
    return [lo, hi] if math.isfinite(lo) and math.isfinite(hi) else None


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _plain_number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(value)


def _cores() -> int:
    """The CPU threads ybROAD may keep busy: the caller's torch thread setting (``OMP_NUM_THREADS``,
    ``torch.set_num_threads``, a sweep worker's ``--threads``), at most the cores this process may run on.
    A sweep's workers x threads therefore stays the machine's cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, torch.get_num_threads()))


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


class _Scorer:
    """Target score of batches of images, under inference mode."""

    def __init__(self, model: nn.Module, target: int, score: str, device: torch.device,
                 output_key: str | int | None = None, probability: str = "softmax") -> None:
        self.model, self.target, self.score, self.device = model, target, score, device
        self.output_key, self.probability = output_key, probability

    def raw(self, images: torch.Tensor) -> torch.Tensor:
        """The model's ``(B, K)`` logits as float64 on the CPU, checked (K = 1 for a one-logit model)."""
        with torch.inference_mode():
            out = logits_of(self.model(images.to(self.device)), self.output_key)
        if out.ndim == 2 and out.shape[0] != images.shape[0] and isinstance(self.output_key, TargetHead):
            raise InputError(f"target {', '.join(self.output_key.labels)} gave {out.shape[0]} value(s) for a batch of "
                             f"{images.shape[0]} perturbed images: a target must return one scalar per image of the "
                             "batch it is given (index the batch, don't pick its first row)")
        if out.ndim != 2 or out.shape[0] != images.shape[0]:
            raise ValueError("model: expected its output to be a (batch, classes) tensor of logits")
        out = out.detach().to("cpu", torch.float64)
        classes = class_logits(out).shape[1]
        if not 0 <= self.target < classes:
            raise ValueError(f"target: {self.target} is not a class index of a {classes}-class output")
        return out

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        # a one-logit model has two classes (-z, z) and its probability is the sigmoid; a target
        # head's column is the target's value
        out = class_scores(self.raw(images), self.probability if self.score == "prob" else "logit")
        return out[:, self.target]

    def clean(self, image: torch.Tensor) -> tuple[float, float | None, int | None, str]:
        """The target's score, its probability, the number of classes and which probability that is
        (``softmax``, or ``sigmoid`` for ``probability="sigmoid"`` and one-logit models), for one image
        (one forward); a target's value (``score="value"``) has no probability and no classes."""
        raw = self.raw(image)
        if self.score == "value":
            return float(raw[0, self.target]), None, None, "value"
        prob = class_scores(raw, self.probability)
        score = prob if self.score == "prob" else class_scores(raw, "logit")
        kind = "sigmoid" if self.probability == "sigmoid" or raw.shape[1] == 1 else "softmax"
        return float(score[0, self.target]), float(prob[0, self.target]), int(prob.shape[1]), kind


#: the one line ROAD gives for a volume
VOLUME_REFUSAL = ("ybROAD (ROAD) works on 2-D images only: its noisy linear imputation fills pixels from their "
                  "8 neighbours in the plane; for a volume leave out --road")


def _check_args(model: nn.Module, input_tensor: torch.Tensor, cams: torch.Tensor, target: int,
                layer_names: Sequence[str] | None, non_spatial: Sequence[bool] | None,
                percentiles: Sequence[float], score: str, noise: float, seed: int, trials: int,
                batch_size: int) -> tuple[list[str], list[bool], tuple[float, ...]]:
    """:func:`ybroad`'s arguments checked: the layer names, non-spatial flags and percentages to use."""
    if not isinstance(model, nn.Module):
        raise TypeError("model: expected a torch.nn.Module")
    if not isinstance(input_tensor, torch.Tensor) or not isinstance(cams, torch.Tensor):
        raise TypeError("input_tensor, cams: expected torch tensors")
    if input_tensor.ndim != 4 or input_tensor.shape[0] != 1:
        raise ValueError(f"input_tensor: expected shape (1, C, H, W), got {tuple(input_tensor.shape)}")
    height, width = input_tensor.shape[-2:]
    if cams.ndim != 3 or tuple(cams.shape[1:]) != (height, width):
        raise ValueError(f"cams: expected shape [L, {height}, {width}], got {tuple(cams.shape)}")
    n_layers, n_pixels = cams.shape[0], height * width
    names = [str(i) for i in range(n_layers)] if layer_names is None else [str(n) for n in layer_names]
    flags = [False] * n_layers if non_spatial is None else [bool(f) for f in non_spatial]
    if len(names) != n_layers or len(flags) != n_layers:
        raise ValueError(f"layer_names, non_spatial: expected {n_layers} entries, one per CAM")
    pcts = check_percentiles(percentiles, n_pixels)
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
    return names, flags, pcts


def baseline_orders(n_pixels: int, seed: int, trials: int) -> list[np.ndarray]:
    """The chance baseline's random pixel rankings, one per trial: trial ``t``'s is the permutation drawn
    from ``numpy.random.default_rng((seed, t, BASELINE_STREAM))``, most relevant first (``(n_pixels,)`` int)."""
    return [np.random.default_rng((seed, t, BASELINE_STREAM)).permutation(n_pixels) for t in range(trials)]


def _baseline_masks(n_pixels: int, seed: int, trials: int, ks: Sequence[int], packed: list[np.ndarray],
                    jobs: list[list[tuple[int, int, int]]], only_trial: list[int | None]) -> None:
    """Append the chance baseline's masks: trial ``t`` scores only its own random ranking (job layer ``-1``);
    they are not shared with the layers' masks, so each is scored with its own trial's noise."""
    for t, order in enumerate(baseline_orders(n_pixels, seed, trials)):
        for direction, ranked in enumerate((order, order[::-1])):
            for i, mask in enumerate(masks_from_order(ranked, ks, n_pixels)):
                packed.append(np.packbits(mask))
                jobs.append([(-1, direction, i)])
                only_trial.append(t)


def _distinct_masks(cams_np: np.ndarray, flags: Sequence[bool], ks: Sequence[int]
                    ) -> tuple[torch.Tensor, list[np.ndarray], list[list[tuple[int, int, int]]]]:
    """The defined layers (L,), every distinct removal mask (bit-packed) and, per mask, the
    (layer, direction, percentage) jobs that use it: a mask several layers share is imputed once."""
    n_layers, n_pixels = cams_np.shape
    # Masks: one list of distinct masks (packed, to stay small for hundreds of
    # layers) and, for each, the (layer, direction, percentage) jobs using it.
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
            for i, mask in enumerate(masks_from_order(order, ks, n_pixels)):
                bits = np.packbits(mask)
                key = bits.tobytes()
                if key not in unique:
                    unique[key] = len(packed)
                    packed.append(bits)
                    jobs.append([])
                jobs[unique[key]].append((layer, direction, i))
    log.debug("ybroad: %d layers defined, %d distinct masks for %d jobs", int(defined.sum()), len(packed),
              sum(map(len, jobs)))
    return defined, packed, jobs


def ybroad(
    model: nn.Module,
    input_tensor: torch.Tensor,
    cams: torch.Tensor,
    target: int | TargetHead,
    *,
    layer_names: Sequence[str] | None = None,
    non_spatial: Sequence[bool] | None = None,
    percentiles: Sequence[float] = (20, 40, 60, 80),
    score: str = "prob",
    noise: float = 0.01,
    seed: int = 0,
    trials: int = DEFAULT_TRIALS,
    batch_size: int = 32,
    output_key: str | int | None = None,
    progress: Callable[[int, int], None] | None = None,
    options: RoadOptions | None = None,
    layers: Sequence[Mapping[str, Any]] | None = None,
    probability: str = "softmax",
) -> YbRoad:
    """ROAD score of every layer's CAM (ybROAD).

    ROAD (Remove And Debias): Y. Rong, T. Leemann, V. Borisov, G. Kasneci, E. Kasneci, "A Consistent
    and Efficient Evaluation Strategy for Attribution Methods", ICML 2022, https://arxiv.org/abs/2202.00449.
    A layer's score is the mean over percentages p of ``(C_LeRF - C_MoRF) / 2``, C being the change in
    the target's score when the CAM's least (LeRF) or most (MoRF) relevant p% of pixels are replaced
    by noisy linear imputation (see the module docstring, also for pytorch-grad-cam's ``q = 100 - p``).

    Each distinct removal mask is imputed once (masks shared by several layers,
    and by all trials, are solved once) and each of its noisy images scored once,
    on background threads while the model scores finished images in batches of
    ``batch_size``. On the CPU, as many batches are scored at a time as torch's thread setting
    (``torch.get_num_threads()``: ``OMP_NUM_THREADS``, ``torch.set_num_threads``) allows, each
    single-threaded; the solver threads share those cores. The model runs in eval
    mode under ``torch.inference_mode``; its train/eval flags are restored.

    Args:
        model: Classifier returning ``(batch, classes)`` logits.
        input_tensor: ``(1, C, H, W)`` model input, already normalised.
        cams: ``[L, H, W]`` raw CAMs at input size (any scale; only the ranking matters).
        target: Class index scored, or a target on the model's output (a one-column
            :class:`camanim.trace.TargetHead`, the result's ``target.head``): then its value's change is
            scored (``score="value"``, whatever ``score`` says) and ``output_key`` is the head's.
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
        options: All of ``percentiles`` ... ``batch_size`` at once (:class:`RoadOptions`, whose
            batch size is settled for the input's device); then those keywords keep their defaults.
        probability: what ``score="prob"`` reads: ``"softmax"`` or ``"sigmoid"`` (the run's
            ``options["probability"]``; a one-logit model's is always its sigmoid).
        layers: One entry per CAM as a run's manifest keeps it (``name``, ``module``, ``type``,
            ``non_spatial``, ``same_as``): gives ``layer_names`` and ``non_spatial`` when those are not
            passed, and the aliases (``same_as``) and pass-through notes of the verdict.

    The chance baseline is scored beside the layers: ``trials`` random pixel rankings (see
    :func:`baseline_orders`), ranking ``t`` with trial ``t``'s noise (``2 * P * trials`` more images).

    Returns:
        A :class:`YbRoad`.

    Raises:
        TypeError: If an argument has the wrong type, or ``options`` is given beside a setting
            keyword changed from its default.
        ValueError: If an argument has a bad value or shape, or the model output is not ``(batch, classes)``.
        InputError: a volume input (1, C, D, H, W): ROAD's noisy linear imputation is 2-D only.
    """
    if isinstance(input_tensor, torch.Tensor) and input_tensor.ndim == 5:
        raise InputError(VOLUME_REFUSAL)
    if options is not None:
        if (tuple(percentiles), score, noise, seed, trials, batch_size) != ((20, 40, 60, 80), "prob", 0.01, 0, DEFAULT_TRIALS, 32):
            raise TypeError("pass the settings either as options= or as keywords (percentiles, score, noise, "
                            "seed, trials, batch_size), not both")
        percentiles, score, noise, seed, trials = (options.percentiles, options.score, options.noise, options.seed,
                                                   options.trials)
        batch_size = options.batch_size_for(input_tensor.device.type)
    if layers is not None:
        layers = list(layers)
        if len(layers) != cams.shape[0]:
            raise ValueError(f"layers: expected {cams.shape[0]} entries, one per CAM, got {len(layers)}")
        if layer_names is None:
            layer_names = [str(entry.get("name", i)) for i, entry in enumerate(layers)]
        if non_spatial is None:
            non_spatial = [bool(entry.get("non_spatial")) for entry in layers]
    if isinstance(target, TargetHead):
        output_key, target, score = target, 1, "value"
    names, flags, pcts = _check_args(model, input_tensor, cams, target, layer_names, non_spatial, percentiles,
                                     score, noise, seed, trials, batch_size)
    _, channels, height, width = input_tensor.shape
    n_layers, n_pixels = cams.shape[0], height * width
    ks = [removed_count(p, n_pixels) for p in pcts]
    defined, packed, jobs = _distinct_masks(cams.detach().cpu().reshape(n_layers, n_pixels).numpy(), flags, ks)
    only_trial: list[int | None] = [None] * len(jobs)
    _baseline_masks(n_pixels, seed, trials, ks, packed, jobs, only_trial)

    shape = (trials, n_layers, len(pcts))
    deltas = torch.full((2, *shape), math.nan, dtype=torch.float64)  # [MoRF/LeRF, T, L, P]
    chance = torch.full((2, trials, len(pcts)), math.nan, dtype=torch.float64)  # [MoRF/LeRF, T, P]
    total = sum(trials if t is None else 1 for t in only_trial)
    clean = input_tensor.detach()[0].to("cpu")
    flat_clean = clean.reshape(channels, n_pixels)

    with eval_mode(model):
        scorer = _Scorer(model, target, score, input_tensor.device, output_key, probability)
        base, target_probability, num_classes, probability_used = scorer.clean(input_tensor)
        if progress is not None:
            progress(0, total)
        # On the CPU, single-threaded forward passes on as many threads as the caller gives torch
        # (``_cores``), beside the imputation solver (the model and the solver share those cores); on a
        # GPU, one stream of batches.
        on_cpu = input_tensor.device.type == "cpu"
        cores = _cores()
        streams = cores if on_cpu else 1
        solvers = max(1, cores // 4) if on_cpu else max(1, min(8, cores))
        stream = ImputationStream(clean, PackedMasks(packed, n_pixels), workers=solvers,
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
                        if layer < 0:
                            chance[direction, t, i] = value - base
                        else:
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
                    for t in (range(trials) if only_trial[u] is None else (only_trial[u],)):
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
        baseline_morf=chance[0], baseline_lerf=chance[1],
        same_as=[_same_as(entry) for entry in layers] if layers is not None else None,
        notes=pass_through_notes(layers) if layers is not None else None,
        target_probability=target_probability, num_classes=num_classes,
        probability=probability_used,
    )


def _same_as(entry: Mapping[str, Any]) -> int | None:
    value = entry.get("same_as")
    return value if isinstance(value, int) and not isinstance(value, bool) else None
