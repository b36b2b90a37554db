"""camanim: CAManim, class activation maps for every layer of a CNN, as videos, with ybROAD.

Example:
    >>> import camanim
    >>> result = camanim.animate()            # EfficientNet-Lite0 on sample:cat, Grad-CAM, all layers
    >>> result.save("camanim-out")
"""

from .version import __version__  # noqa: I001  (first: the modules below read it)
from .api import animate, road_for_run, score_metrics, trace_layers, ybroad
from .compute import BoxTarget, CamOptions, OutputTarget, SegmentationTarget, SimilarityTarget
from .draw import normalise, overlay
from .errors import InputError
from .methods import CamMethod, MethodContext, cam_method, get_method, list_methods, register_method
from .results import CamResult, CamSet, Target
from .road import RoadOptions, YbRoad, YbRoadAcross
from .rundir import SaveOptions, load_cams
from .sources import LoadedModel, Preprocess, list_models, load_image, load_model
from .trace import LayerRecord, run_trace, select_layers

__all__ = [
    "BoxTarget", "CamMethod", "CamOptions", "CamResult", "CamSet", "InputError", "LayerRecord", "LoadedModel",
    "MethodContext", "OutputTarget", "Preprocess", "RoadOptions", "SaveOptions", "SegmentationTarget",
    "SimilarityTarget", "Target", "YbRoad", "YbRoadAcross", "__version__", "animate", "cam_method",
    "get_method", "list_methods", "list_models", "load_cams", "load_image", "load_model", "normalise", "overlay", "register_method",
    "road_for_run", "run_trace", "score_metrics", "select_layers", "trace_layers", "ybroad",
]
