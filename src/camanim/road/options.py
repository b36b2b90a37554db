"""What a ybROAD scoring is asked to do: one frozen :class:`RoadOptions`, built once and passed down whole."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import InputError

#: Noise draws (and random rankings of the chance baseline) per layer by default: enough for a 95%
#: interval and a chance band, at about twice the one-trial cost of the default run (README, BENCHMARKS.md).
DEFAULT_TRIALS = 3


@dataclass(frozen=True)
class RoadOptions:
    """Settings of ybROAD (see :func:`camanim.road.ybroad` for what each does).

    Attributes:
        percentiles: percent of pixels *removed* at each ROAD step, each in (0, 100).
        score: ``prob`` (change in the target's softmax probability) or ``logit``.
        noise: standard deviation of the imputation noise, in normalised input units (>= 0).
        seed: base seed of the noise (>= 0).
        trials: noise draws to repeat the scoring with, and random rankings of the chance baseline (>= 1).
        batch_size: perturbed images per forward; None: 8 on the CPU, 32 on a GPU (:meth:`batch_size_for`).

    Raises:
        InputError: (on construction) a value out of its range or a repeated percentage; the message
            names the CLI flag.
    """

    percentiles: tuple[float, ...] = (20, 40, 60, 80)
    score: str = "prob"
    noise: float = 0.01
    seed: int = 0
    trials: int = DEFAULT_TRIALS
    batch_size: int | None = None

    def __post_init__(self) -> None:
        try:
            pcts = tuple(float(p) for p in self.percentiles)
        except (TypeError, ValueError) as exc:
            raise InputError(f"--road-percentiles {self.percentiles!r} must be numbers like 20,40,60,80") from exc
        if len(set(pcts)) != len(pcts):
            raise InputError(f"--road-percentiles {','.join(f'{p:g}' for p in pcts)} repeats a percentage: "
                             "give each once")
        if not pcts or not all(0 < v < 100 for v in pcts):
            raise InputError(f"--road-percentiles {','.join(f'{p:g}' for p in pcts) or 'none'} "
                             "must lie strictly between 0 and 100")
        object.__setattr__(self, "percentiles", pcts)
        if self.score not in ("prob", "logit"):
            raise InputError(f"--road-score '{self.score}' is unknown: use prob or logit")
        if self.trials < 1:
            raise InputError(f"--road-trials {self.trials} must be at least 1")
        if not math.isfinite(self.noise) or self.noise < 0:
            raise InputError(f"--road-noise {self.noise} must not be negative")
        if self.seed < 0:
            raise InputError(f"--seed {self.seed} must not be negative")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"--road-batch-size {self.batch_size} must be at least 1")

    @classmethod
    def parse_percentiles(cls, text: str) -> tuple[float, ...]:
        """``"20,40,60,80"`` -> ``(20.0, 40.0, 60.0, 80.0)``.

        Raises:
            InputError: an entry that is not a number.
        """
        try:
            return tuple(float(v) for v in text.split(",") if v.strip())
        except ValueError as exc:
            raise InputError(f"--road-percentiles '{text}' must be numbers like 20,40,60,80") from exc

    def batch_size_for(self, device_type: str) -> int:
        """The batch size to use on ``device_type``: the one given, or 32 on a GPU and 8 on the CPU
        (measured on a 2-core CPU: ResNet50 is fastest per image at batch 2-8; GPUs like larger batches)."""
        if self.batch_size is not None:
            return int(self.batch_size)
        return 32 if device_type == "cuda" else 8
