"""CAM methods behind one registry (``camanim methods`` lists them)."""

from . import activation, extra, gradient, perturbation  # noqa: F401  (registers the built-in methods)
from .core import (
    REFUSED,
    SCORES,
    CamMethod,
    LayerJob,
    MethodContext,
    ScoreFn,
    _freeze_builtins,
    cam_method,
    get_method,
    get_methods,
    list_methods,
    logit_score,
    register_method,
    score_function,
    softmax_score,
    weighted_map,
)

_freeze_builtins()

__all__ = [
    "REFUSED", "SCORES", "CamMethod", "LayerJob", "MethodContext", "ScoreFn", "cam_method", "get_method",
    "get_methods", "list_methods", "logit_score", "register_method", "score_function", "softmax_score",
    "weighted_map",
]
