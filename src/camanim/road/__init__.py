"""road: ybROAD, the ROAD faithfulness score of every layer's CAM (Rong et al., 2022,
https://arxiv.org/abs/2202.00449; CAManim's "Quantitative Evaluation").

==============  ==============================================================
module          job
==============  ==============================================================
``options``     :class:`RoadOptions`, built once and passed down whole
``masks``       MoRF / LeRF removal masks, exactly k pixels each
``imputation``  noisy linear imputation, many masks of one image at once
``metric``      the scores per layer, trial and percentage: :class:`YbRoad`
``files``       ``ybroad.csv`` / ``.json`` / ``.png``
==============  ==============================================================
"""

from .files import write_ybroad
from .masks import removal_masks
from .metric import SCORES, YbRoad, YbRoadMax, ybroad
from .options import RoadOptions

__all__ = ["SCORES", "RoadOptions", "YbRoad", "YbRoadMax", "removal_masks", "write_ybroad", "ybroad"]
