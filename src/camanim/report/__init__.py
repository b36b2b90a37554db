"""report: a run's ``report.html`` (or its notebook view), and several runs compared in lock-step.

Everything here reads a :class:`camanim.rundir.RunView`: a finished run folder
(:func:`camanim.rundir.load_run`) or a result still in memory, and nothing else, so a report can
be rebuilt, or runs compared, long after the model is gone.

The report is one self-contained HTML file: styles, scripts and every frame are inlined (frames
as base64 JPEG, lossy previews of the lossless PNG files), so it opens from disk, offline, and can be mailed
as it is. Frames are held in a JSON array and put into two ``<img>`` elements on demand, rather
than as one ``<img>`` per frame: a 571-layer DenseNet161 report (1142 frames of 320x384) was about
15 MB with WebP frames (JPEG's are about a third larger) and opens in about a second.

============  ==============================================================
module        job
============  ==============================================================
``page``      ``report.html`` and the notebook fragment
``charts``    inline SVG charts (parameters, time, ybROAD)
``plots``     ``layer_params.png``, ``layer_time.png`` (matplotlib)
``compare``   ``compare.html`` and grid videos of several runs
``html``      escaping, JSON in script tags, formats, frames as data URIs
``template``  the page's CSS and JavaScript
============  ==============================================================

Example:
    >>> from camanim.report import build_report, compare
    >>> build_report("camanim-out")                      # doctest: +SKIP
    PosixPath('camanim-out/report.html')
    >>> compare(["out-gradcam", "out-scorecam"], "cmp")  # doctest: +SKIP
    {'html': PosixPath('cmp/compare.html'), 'video': PosixPath('cmp/compare_grid.mp4')}
"""

from .compare import align_by_depth, compare, write_compare, write_grid_video
from .html import data_uri
from .page import build_report, render_report, report_html, write_index, write_report

__all__ = ["align_by_depth", "build_report", "compare", "data_uri", "render_report", "report_html", "write_compare", "write_index",
           "write_grid_video", "write_report"]
