"""trace: one forward (and one backward) pass that records every selected layer.

=============  ==============================================================
module         job
=============  ==============================================================
``run``        the pass: wrap the selected modules, forward, backward, records
``records``    :class:`LayerRecord`, :class:`Trace`, kept activations
``select``     which modules are recorded (``--layers`` patterns)
``model``      eval mode for a pass; the logits in a model's output
``inplace``    keeping recorded outputs intact under in-place writes
``backward``   each layer's gradient handed to a sink as the backward reaches it
``layouts``    how each output maps onto the image plane
=============  ==============================================================
"""

from .backward import LayerSink
from .model import (
    PROBABILITIES,
    TargetHead,
    class_logits,
    class_scores,
    describe_output,
    eval_mode,
    logits_of,
    probability_kind,
)
from .records import Activations, LayerRecord, Trace
from .run import WRITES_IN_PLACE, ScoreFn, run_trace
from .select import LayerSpec, select_layers, split_distinct

__all__ = ["PROBABILITIES", "WRITES_IN_PLACE", "Activations", "LayerRecord", "LayerSink", "LayerSpec", "ScoreFn",
           "TargetHead", "Trace", "class_logits", "class_scores", "describe_output", "eval_mode", "logits_of",
           "probability_kind", "run_trace", "select_layers", "split_distinct"]
