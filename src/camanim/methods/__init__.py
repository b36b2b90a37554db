"""CAM methods behind one registry (``camanim methods`` lists them).

``base`` holds the interface (:class:`CamMethod`, :class:`MethodContext`, the scores), ``registry``
the one registry; ``gradient``, ``activation``, ``extra`` and ``perturbation`` the built-in methods.
"""

from . import activation, extra, gradient, legrad, perturbation  # noqa: F401  (registers the built-in methods)
from .base import (
    SCORES,
    CamMethod,
    LayerJob,
    MethodContext,
    ScoreFn,
    logit_score,
    score_function,
    softmax_score,
    weighted_map,
)
from .registry import (
    REFUSED,
    cam_method,
    freeze_builtins,
    get_method,
    get_methods,
    list_methods,
    register_method,
)

freeze_builtins()

__all__ = [
    "REFUSED", "SCORES", "CamMethod", "LayerJob", "MethodContext", "ScoreFn", "cam_method", "get_method",
    "get_methods", "list_methods", "logit_score", "register_method", "score_function", "softmax_score",
    "weighted_map",
]
