"""Which layer ybROAD calls best, stated honestly: candidates, aliases, a chance band, warnings in words.

* **Candidates.** Layers that share one output tensor (``same_as``) have the same CAM and so the
  same score: they are one candidate, named by the first layer that computes it, with the others
  listed as its aliases.
* **What a layer is.** A recorded module that only passes a value on (``Identity``, ``Dropout`` in
  eval mode), whose input no other recorded module produced, carries the value its parent computed
  functionally: timm's ``BatchNormAct2d`` runs the norm as a function, then ``drop`` (an Identity),
  then ``act``, so ``bn2.drop`` is the "BatchNorm output, before activation". :func:`pass_through_notes`
  says so, from the layer entries alone.
* **Chance.** Random pixel rankings give the ROAD of explanations that carry no information; a
  layer is *above the baseline* when its mean is above the upper end of their band.
* **Separability.** The best candidate is separable from the runner-up when the confidence interval
  of their paired difference (over trials, or images) excludes 0, and from the baseline when its own
  interval lies above the band.
* **Warnings**, in words, when the model barely believes in the target (its probability under
  ``2 / num_classes``) or when no layer is above the baseline: the report then shows the warning
  instead of a star.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .stats import CONFIDENCE, mean_ci

#: How many candidates ``ybroad.json`` lists.
TOP = 5

#: Module types that return their input unchanged in eval mode.
PASS_THROUGH_TYPES = frozenset({"Identity", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout",
                                "FeatureAlphaDropout", "DropPath", "DropBlock2d"})

#: The model's probability for its target below ``CHANCE_FACTOR / num_classes`` is "below chance".
CHANCE_FACTOR = 2.0

_KINDS = (("BatchNorm", "BatchNorm"), ("GroupNorm", "GroupNorm"), ("LayerNorm", "LayerNorm"),
          ("InstanceNorm", "InstanceNorm"), ("Norm", "normalisation"))


def pass_through_notes(layers: Sequence[Mapping[str, Any]]) -> list[str | None]:
    """Per layer, what a pass-through module's output is, or None for every other layer.

    A layer is a pass-through when its ``type`` is in :data:`PASS_THROUGH_TYPES` and it has no
    ``same_as`` (no other recorded module produced its value). Its note names the value by its
    parent module's type (``"BatchNorm output"`` for a ``BatchNormAct2d``), and adds ``", before
    activation"`` when the parent has an ``act`` child recorded after it that changes the value
    (``" (no activation follows)"`` when that ``act`` passes on the very same tensor).

    Args:
        layers: the run's layer entries (manifest ``layers``: ``name``, ``module``, ``type``, ``same_as``).

    Returns:
        One note (or None) per layer.

    Example:
        >>> pass_through_notes([{"name": "bn2", "module": "bn2", "type": "BatchNormAct2d"},
        ...                     {"name": "bn2.drop", "module": "bn2.drop", "type": "Identity"},
        ...                     {"name": "bn2.act", "module": "bn2.act", "type": "ReLU6"}])
        [None, 'BatchNorm output, before activation', None]
    """
    types = {str(layer.get("module", layer.get("name"))): str(layer.get("type", "")) for layer in layers}
    notes: list[str | None] = []
    for i, layer in enumerate(layers):
        module = str(layer.get("module", layer.get("name", "")))
        if str(layer.get("type")) not in PASS_THROUGH_TYPES or layer.get("same_as") is not None:
            notes.append(None)
            continue
        parent = module.rsplit(".", 1)[0] if "." in module else ""
        parent_type = types.get(parent, "")
        kind = next((text for key, text in _KINDS if key in parent_type), None)
        if kind is not None:
            note = f"{kind} output"
        elif parent_type:
            note = f"value computed inside {parent_type} '{parent}', passed on unchanged"
        else:
            note = f"input of this {layer.get('type')}, passed on unchanged"
        act = next((j for j in range(i + 1, len(layers))
                    if str(layers[j].get("module", layers[j].get("name", ""))) == f"{parent}.act"), None)
        if parent and act is not None:
            # an act that passes the very same tensor on is an Identity: no activation follows
            note += " (no activation follows)" if layers[act].get("same_as") == i else ", before activation"
        notes.append(note)
    return notes


def aliases_of(same_as: Sequence[int | None]) -> list[list[int]]:
    """Per layer, the later layers that share its output (``same_as`` pointing at it)."""
    out: list[list[int]] = [[] for _ in same_as]
    for i, s in enumerate(same_as):
        if s is not None and 0 <= s < len(out):
            out[s].append(i)
    return out


def chance_threshold(num_classes: int, probability: str = "softmax") -> float:
    """The probability under which a target counts as "below chance".

    ``softmax``: ``CHANCE_FACTOR / num_classes`` for 4 classes or more; chance itself, ``1 / num_classes``,
    for 2 or 3 classes (where twice chance would call a predicted class at 45% untrustworthy).
    ``sigmoid`` (each class its own probability: multi-label and one-logit models): 1/2, under which
    the model says the class is absent.
    """
    if probability == "sigmoid":
        return 0.5
    if num_classes < 4:
        return 1.0 / num_classes
    return CHANCE_FACTOR / num_classes


def chance_warning(probability: float | None, num_classes: int | None, kind: str = "softmax") -> str | None:
    """The words for a target the model barely believes in, or None when its probability is at or above
    :func:`chance_threshold` (or unknown). ``kind`` is which probability it is (softmax or sigmoid)."""
    if probability is None or not num_classes or not math.isfinite(probability):
        return None
    threshold = chance_threshold(num_classes, kind)
    if probability >= threshold:
        return None
    if kind == "sigmoid":
        below = "below its sigmoid's 1/2 (the model says the class is absent)"
    elif num_classes < 4:
        below = f"below chance, 1/{num_classes} classes = {threshold:.3%}"
    else:
        below = f"below {CHANCE_FACTOR:g}/{num_classes} classes = {threshold:.3%}"
    return (f"low confidence: the model gives the target {probability:.3%} probability ({kind}), {below}; "
            "ROAD then measures changes of a score the model does not hold, and no layer's ranking can be trusted")


def _fmt(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.4g}"


def _interval(lo: float, hi: float) -> list[float] | None:
    return [float(lo), float(hi)] if math.isfinite(lo) and math.isfinite(hi) else None


def verdict(draws: np.ndarray, defined: Sequence[bool], names: Sequence[str], same_as: Sequence[int | None],
            notes: Sequence[str | None], band: tuple[float, float, float], *, unit: str = "trials",
            warnings: Sequence[str] = (), confidence: float = CONFIDENCE,
            remedy: str | None = None) -> dict[str, Any]:
    """The best candidate and the top ones, with intervals, separability and warnings, as plain JSON.

    Args:
        draws: ``(n, L)`` ROAD per draw (trial or image) and layer; NaN where undefined.
        defined: ``(L,)`` whether each layer has a score.
        names: ``(L,)`` layer names.
        same_as: ``(L,)`` the earlier layer whose output each one shares, or None.
        notes: ``(L,)`` what a pass-through layer carries (:func:`pass_through_notes`), or None.
        band: the chance baseline ``(mean, low, high)`` (random pixel rankings).
        unit: what the ``n`` draws are, for the words (``"trials"``, ``"images"``).
        warnings: warnings known beforehand (a low-confidence target), kept first.
        confidence: level of the intervals.
        remedy: what to do about a single draw, if not the default advice (more trials or images).

    Returns:
        ``{"above_baseline": [L] bool or None, "candidates": [...], "best": {...} or None,
        "warnings": [...], "statement": str}``; each candidate has ``index``, ``name``, ``aliases``
        (names), ``note``, ``ybroad`` (mean), ``ci`` ([low, high] or None) and ``above_baseline``.
    """
    draws = np.asarray(draws, dtype=np.float64)
    n = draws.shape[0]
    mean, lo, hi = mean_ci(draws, confidence)
    upper = band[2]
    alias = aliases_of(same_as)
    # a band from one random ranking is one value, not a band: no layer can be called above it
    above: list[bool | None] = [bool(mean[i] > upper) if defined[i] and math.isfinite(mean[i]) and n >= 2
                                and math.isfinite(upper) else None for i in range(len(names))]
    order = sorted((i for i in range(len(names)) if defined[i] and same_as[i] is None and math.isfinite(mean[i])),
                   key=lambda i: (-mean[i], i))

    def candidate(i: int) -> dict[str, Any]:
        return {"index": i, "name": names[i], "aliases": [names[j] for j in alias[i]], "note": notes[i],
                "ybroad": float(mean[i]), "ci": _interval(lo[i], hi[i]), "above_baseline": above[i]}

    out_warnings = list(warnings)
    if n < 2:
        remedy = remedy or ("repeat with --road-trials 2 or more" if unit == "trials" else f"score 2 or more {unit}")
        out_warnings.append(f"one {unit[:-1] if unit.endswith('s') else unit}: no interval can be given; {remedy}")
    if not order:
        return {"above_baseline": above, "candidates": [], "best": None, "warnings": out_warnings,
                "statement": "no layer has a defined ROAD score (non-spatial or constant CAMs only)"}
    if n >= 2 and math.isfinite(upper) and not any(above[i] for i in order):
        out_warnings.append(f"no layer beats the chance baseline: every layer's ROAD is at or below the upper "
                            f"end of the random-ranking band ({_fmt(upper)}), so none can be called the most "
                            "faithful")
    best = candidate(order[0])
    runner = order[1] if len(order) > 1 else None
    sep_runner: bool | None = None
    diff_ci = None
    if runner is not None and n >= 2:
        _, dlo, dhi = mean_ci(draws[:, order[0]] - draws[:, runner], confidence)
        diff_ci = _interval(float(dlo), float(dhi))
        sep_runner = bool(dlo > 0)
    sep_base = bool(lo[order[0]] > upper) if n >= 2 and math.isfinite(upper) else None
    best.update({
        "runner_up": None if runner is None else {"index": runner, "name": names[runner],
                                                  "ybroad": float(mean[runner])},
        "difference_ci": diff_ci,
        "separable_from_runner_up": sep_runner,
        "separable_from_baseline": sep_base,
        "draws": n,
        "unit": unit,
    })
    return {"above_baseline": above, "candidates": [candidate(i) for i in order[:TOP]], "best": best,
            "warnings": out_warnings, "statement": statement(best, band, confidence)}


def _yes_no(value: bool | None, unknown: str) -> str:
    return unknown if value is None else "yes" if value else "no"


def statement(best: Mapping[str, Any], band: tuple[float, float, float], confidence: float = CONFIDENCE) -> str:
    """One sentence on the best candidate: its number (from 1) and name, what it is, its interval and how far it
    stands out (``best layer 4 (layer3.1.conv2): ybROAD ...``)."""
    what = []
    if best.get("note"):
        what.append(str(best["note"]))
    if best.get("aliases"):
        what.append("same CAM as " + ", ".join(best["aliases"]))
    # layers count from 1 in everything a person reads; the name says which module it is
    text = f"best layer {best['index'] + 1} ({'; '.join([str(best['name']), *what])})"
    text += f": ybROAD {_fmt(best['ybroad'])}"
    ci = best.get("ci")
    unit = best.get("unit", "trials")
    if ci:
        text += f" ({confidence:.0%} CI {_fmt(ci[0])} to {_fmt(ci[1])} over {best.get('draws')} {unit})"
    runner = best.get("runner_up")
    if runner:
        text += (f"; separable from the runner-up, layer {runner['index'] + 1} ({runner['name']}, "
                 f"{_fmt(runner['ybroad'])}): "
                 f"{_yes_no(best.get('separable_from_runner_up'), 'unknown (one draw)')}")
    # the interval, not only the mean (a layer's ``above_baseline``), must clear the band's top
    text += (f"; interval above the chance band (up to {_fmt(band[2])}): "
             f"{_yes_no(best.get('separable_from_baseline'), 'unknown (one draw)')}")
    return text
