"""road: ybROAD, the ROAD faithfulness score of every layer's CAM (Rong et al., 2022,
https://arxiv.org/abs/2202.00449; CAManim's "Quantitative Evaluation").

==============  ==============================================================
module          job
==============  ==============================================================
``options``     :class:`RoadOptions`, built once and passed down whole
``masks``       MoRF / LeRF removal masks, exactly k pixels each
``imputation``  noisy linear imputation, many masks of one image at once
``metric``      the scores per layer, trial and percentage: :class:`YbRoad`
``verdict``     the best candidate: aliases, pass-through notes, chance band, separability, warnings
``stats``       confidence intervals and the chance band (Student t)
``across``      ybROAD over several images: :class:`YbRoadAcross`
``files``       ``ybroad.csv`` / ``.json`` / ``.png``
==============  ==============================================================
"""

from .across import YbRoadAcross, ybroad_across
from .files import write_ybroad
from .masks import removal_masks
from .metric import SCORES, YbRoad, YbRoadMax, score_label, ybroad
from .options import DEFAULT_TRIALS, RoadOptions
from .verdict import pass_through_notes

__all__ = ["DEFAULT_TRIALS", "SCORES", "RoadOptions", "YbRoad", "YbRoadAcross", "YbRoadMax", "pass_through_notes", "removal_masks",
           "score_label", "write_ybroad", "ybroad", "ybroad_across"]
