"""compute: from a model and its inputs to raw CAMs of every layer, every target and every method.

=============  ==============================================================
module         job
=============  ==============================================================
``options``    :class:`CamOptions`, built once and passed down whole
``targets``    target specs (index, label, ``topk:K``) -> classes per image
``rows``       images x targets x methods -> one :class:`Row` each
``engine``     as few traced passes as possible for all rows and methods
``maps``       per layer: weights x activations -> ReLU -> upsample
``vectors``    non-spatial layers' 1-D evidence
=============  ==============================================================
"""

from .engine import Computation, compute_cams
from .maps import layer_cams, upsample
from .options import CamOptions
from .rows import Row, explain
from .targets import TargetSpec, TopK, is_multi_target, parse_target, rows_for
from .vectors import UnitVectors, drop_non_spatial, unit_vectors

__all__ = ["CamOptions", "Computation", "Row", "TargetSpec", "TopK", "UnitVectors", "compute_cams",
           "drop_non_spatial", "explain", "is_multi_target", "layer_cams", "parse_target", "rows_for",
           "unit_vectors", "upsample"]
