"""Faithfulness metrics beside ybROAD, per layer: Deletion/Insertion AUC, Average Drop, Increase in
Confidence and the CAM-times-image confidence change; how the metrics agree (best layers, Spearman).

``options`` (which metrics, :class:`MetricOptions`) and ``forwards`` (perturbed images scored once, in
shared batches; maps scaled as the references scale them) under ``curve`` (a metric over layers);
``deletion`` and ``confidence`` compute them; ``agreement`` compares them; ``files`` writes them; ``run``
computes every requested metric for one image (and puts a new ybROAD into a saved run's agreement).
"""

from .agreement import agreement
from .curve import LayerCurve, best_words
from .files import agreement_markdown, write_agreement, write_metric
from .options import EXTRA, METRICS, MetricOptions, parse_metrics
from .run import layer_metrics, road_curve, summary, with_road

__all__ = ["EXTRA", "METRICS", "LayerCurve", "MetricOptions", "agreement", "best_words", "agreement_markdown", "layer_metrics",
           "parse_metrics", "road_curve", "summary", "with_road", "write_agreement", "write_metric"]
