"""sweep: CAManim over a dataset, images × models × methods, on a local pool or a Ray cluster, resumable.

=============  ==============================================================
module         job
=============  ==============================================================
``items``      the images a user names (folders, globs, CSV/TSV lists) and the items, keyed by content
``work``       one item's work, the same on every runner (models loaded once per worker)
``tables``     the images and layers tables: Parquet part files (atomic), CSV, YbRoad rebuilt
``aggregate``  ybROAD across images per (model, method), by :func:`camanim.road.ybroad_across`
``pool``       the local pool of worker processes
``cluster``    the Ray runner (Ray imported only here, only when asked for)
``page``       ``sweep.html`` and ``sweep.png``
``run``        a sweep from start to end, resumable
=============  ==============================================================
"""

from .items import ImageEntry, SweepItem, expand_images, sweep_items
from .run import SAVE_WHICH, SweepOptions, run_sweep
from .tables import read_table
from .work import SweepSettings

__all__ = ["SAVE_WHICH", "ImageEntry", "SweepItem", "SweepOptions", "SweepSettings", "expand_images", "read_table",
           "run_sweep", "sweep_items"]
