"""compute: from a model and its inputs to raw CAMs of every layer, every target and every method.

=============  ==============================================================
module         job
=============  ==============================================================
``options``    :class:`CamOptions`, built once and passed down whole
``targets``    target specs (index, label, ``topk:K``) -> classes per image; targets on the model's
               output (a callable, ``seg:``, ``similar:``, ``box:``) bound to the images
``rows``       images x targets x methods -> one :class:`Row` each
``engine``     as few traced passes as possible for all rows and methods
``maps``       per layer: weights x activations -> ReLU -> upsample; CAMs kept at layer resolution
               and upsampled a run of layers at a time when read (:class:`LazyCams`)
``vectors``    non-spatial layers' 1-D evidence
=============  ==============================================================
"""

from .engine import Computation, compute_cams
from .maps import LayerView, LazyCams, layer_cams, upsample
from .options import CamOptions
from .rows import Row, explain
from .targets import (
    BoxTarget,
    OutputTarget,
    SegmentationTarget,
    SimilarityTarget,
    TargetSpec,
    TopK,
    bind_targets,
    is_multi_target,
    is_value_target,
    parse_target,
    rows_for,
    written_as,
)
from .vectors import UnitVectors, drop_non_spatial, unit_vectors

__all__ = ["BoxTarget", "CamOptions", "Computation", "LayerView", "LazyCams", "OutputTarget", "Row", "SegmentationTarget", "SimilarityTarget", "TargetSpec",
           "TopK", "UnitVectors", "bind_targets", "compute_cams", "drop_non_spatial", "explain", "is_multi_target",
           "is_value_target", "layer_cams", "parse_target", "rows_for",
           "unit_vectors", "upsample", "written_as"]
