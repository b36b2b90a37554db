"""camanim: CAManim, class activation maps for every layer of a CNN, as videos, with ybROAD.

Example:
    >>> import camanim
    >>> result = camanim.animate()            # EfficientNet-Lite0 on sample:cat, Grad-CAM, all layers
    >>> result.save("camanim-out")
"""

__version__ = "0.1.0"

from .api import CamResult, Target, animate, trace_layers  # noqa: E402
from .errors import InputError  # noqa: E402
from .methods import CamMethod, MethodContext, cam_method, get_method, list_methods, register_method  # noqa: E402
from .normalise import normalise  # noqa: E402
from .road import YbRoad  # noqa: E402
from .runs import CamSet  # noqa: E402
from .scoring import road_for_run, ybroad  # noqa: E402
from .sources import LoadedModel, Preprocess, list_models, load_image, load_model  # noqa: E402
from .trace import LayerRecord, run_trace, select_layers  # noqa: E402

__all__ = [
    "CamMethod", "CamResult", "CamSet", "InputError", "LayerRecord", "LoadedModel", "MethodContext", "Preprocess", "Target",
    "YbRoad", "road_for_run", "ybroad",
    "__version__", "animate", "cam_method", "get_method", "list_methods", "list_models", "load_image",
    "load_model", "normalise", "register_method", "run_trace", "select_layers", "trace_layers",
]
