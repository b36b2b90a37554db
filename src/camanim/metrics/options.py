"""``MetricOptions`` and the faithfulness metrics camanim computes per layer beside ybROAD."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError

#: name -> (what it measures, True when higher is better, the reference it equals)
METRICS: dict[str, tuple[str, bool, str]] = {
    "road": ("ybROAD: ROAD (Rong et al. 2022, https://arxiv.org/abs/2202.00449) per layer", True,
             "pytorch-grad-cam ROADMostRelevantFirst/LeastRelevantFirst"),
    "deletion": ("Deletion AUC (Petsiuk et al. 2018, https://arxiv.org/abs/1806.07421): the target's score as the "
                 "most relevant pixels are replaced by zeros, area under the curve (lower is better)", False,
                 "torchcam DeletionInsertionMetric"),
    "insertion": ("Insertion AUC (Petsiuk et al. 2018, https://arxiv.org/abs/1806.07421): the target's score as "
                  "the most relevant pixels are put back on a zero image, area under the curve", True,
                  "torchcam DeletionInsertionMetric"),
    "avgdrop": ("Average Drop (Chattopadhay et al. 2018, https://arxiv.org/abs/1710.11063): "
                "max(0, Y - O) / Y, O the score of the image times the CAM (lower is better)", False,
                "torchcam ClassificationMetric avg_drop"),
    "increase": ("Increase in Confidence (Chattopadhay et al. 2018, https://arxiv.org/abs/1710.11063): "
                 "1 where O > Y, else 0", True,
                 "torchcam ClassificationMetric conf_increase, pytorch-grad-cam IncreaseInConfidence"),
    "cammult": ("CAM-times-image confidence change O - Y (pytorch-grad-cam; its DropInConfidence is "
                "max(0, Y - O))", True, "pytorch-grad-cam CamMultImageConfidenceChange"),
}

#: the metrics other than ybROAD, in the order they are reported
EXTRA = tuple(k for k in METRICS if k != "road")


def parse_metrics(text: str) -> tuple[str, ...]:
    """``"road,deletion,insertion"`` -> ``("road", "deletion", "insertion")``; ``"all"`` gives every metric.

    Raises:
        InputError: If a name is unknown or none is given.
    """
    names = [t.strip().lower() for t in str(text).split(",") if t.strip()]
    if names == ["all"]:
        return tuple(METRICS)
    if not names:
        raise InputError("no metric named (--metric, or metrics= in Python): use "
                         "road,deletion,insertion,avgdrop,increase,cammult or all")
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise InputError(f"metric '{unknown[0]}' is unknown: choose from {', '.join(METRICS)} or all")
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class MetricOptions:
    """How the metrics beside ybROAD are computed (built once, by the CLI or :func:`camanim.score_metrics`).

    Attributes:
        metrics: names from :data:`EXTRA` (``road`` is ybROAD's own, :class:`camanim.road.RoadOptions`).
        score: ``"prob"`` (the run's probability: softmax, or sigmoid for one-logit and multi-label
            models) or ``"logit"``: what the metrics read off the model.
        steps: deletion/insertion intervals (torchcam's ``steps``, 20).
        trials: random pixel orders for the deletion/insertion chance baseline (0: none; otherwise at
            least 2, the fewest that give its 95% prediction band).
        seed: seeds those orders.
        batch_size: perturbed images per forward.
    """

    metrics: tuple[str, ...] = EXTRA
    score: str = "prob"
    steps: int = 20
    trials: int = 5
    seed: int = 0
    batch_size: int = 32

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in EXTRA]
        if unknown:
            raise InputError(f"metric '{unknown[0]}' is unknown here: choose from {', '.join(EXTRA)}")
        if self.score not in ("prob", "logit"):
            raise InputError(f"metric score '{self.score}' is unknown: use prob or logit")
        if int(self.steps) < 1:
            raise InputError(f"deletion/insertion steps must be at least 1, got {self.steps}")
        if int(self.trials) < 0 or int(self.trials) == 1:
            raise InputError("chance trials must be 0 (no chance band) or at least 2 (a 95% prediction band "
                             f"needs two random orders), got {self.trials}")
        if int(self.batch_size) < 1:
            raise InputError(f"metric batch size must be at least 1, got {self.batch_size}")
