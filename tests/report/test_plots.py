"""The report's PNG bar plots: one collection of rectangles, pixel for pixel what one patch per bar drew."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _runfixture import make_run_dir
from PIL import Image

from camanim.report.plots import write_plots
from camanim.rundir import load_run


def _bars_one_patch_each(run, path, values, *, log, ylabel, title, color):
    """The plot as it was drawn before (``ax.bar``: one patch per bar), the reference."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from camanim.report.html import fmt_number
    from camanim.report.plots import layer_axis

    with rc_context({"font.size": 9}):
        fig = Figure(figsize=(12, 5), dpi=120, layout="constrained")
        ax = fig.add_subplot()
        heights = np.array([np.nan if v is None else v for v in values], dtype=float)
        if log:
            heights[heights < 1] = np.nan
        ax.bar(np.arange(len(values)), heights - 1 if log else heights, bottom=1 if log else 0,
               width=0.85 if len(values) < 150 else 1.0, color=color, linewidth=0)
        if log and np.isfinite(heights).any():
            ax.set_yscale("log")
            ax.set_ylim(bottom=1, top=10.0 ** max(1, int(np.ceil(np.log10(np.nanmax(heights))))))
            ax.yaxis.set_major_locator(LogLocator(base=10))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt_number(v)))
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel(ylabel)
        ax.set_title(title, loc="left", fontsize=11, parse_math=False)
        ax.grid(axis="y", color="#e5e7eb", linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        layer_axis(ax, run.layers)
        fig.savefig(path, format="png")


@pytest.mark.parametrize("n_layers", [12, 160])  # bars 0.85 wide, and touching (1.0) from 150 layers
def test_bar_plots_are_pixel_identical_to_one_patch_per_bar(tmp_path, n_layers):
    folder = make_run_dir(tmp_path / "run", n_layers=n_layers, with_ybroad=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    rng = np.random.default_rng(0)
    for i, layer in enumerate(manifest["layers"]):  # zeros, gaps (None) and a wide range of values
        layer["params"] = [0, None, int(10 ** rng.uniform(0, 7))][i % 3]
        layer["seconds"] = None if i % 7 == 3 else float(rng.uniform(0, 0.02))
    (folder / "manifest.json").write_text(json.dumps(manifest))
    run = load_run(folder)
    params, times = write_plots(run)
    for path, kw in ((params, dict(values=[layer["params"] for layer in run.layers], log=True, ylabel="parameters (log scale)",
                                   color="#4c72b0")),
                     (times, dict(values=[None if layer["seconds"] is None else layer["seconds"] * 1000
                                          for layer in run.layers], log=False, ylabel="milliseconds", color="#55a868"))):
        ref = tmp_path / f"ref-{path.name}"
        title = _title_of(path, run)
        _bars_one_patch_each(run, ref, kw.pop("values"), title=title, **kw)
        got, want = np.asarray(Image.open(path)), np.asarray(Image.open(ref))
        assert got.shape == want.shape and np.array_equal(got, want), path.name
        assert (got[..., :3] != 255).any()


def _title_of(path, run):
    """The title write_plots gives each plot (the same words, so the pixels can match)."""
    if path.name == "layer_params.png":
        params = [layer["params"] for layer in run.layers]
        zero = sum(1 for p in params if not p)
        return f"{run.model_name}: parameters per layer ({zero} of {len(params)} layers without parameters not drawn)"
    ms = [None if layer["seconds"] is None else layer["seconds"] * 1000 for layer in run.layers]
    return f"{run.model_name} · {run.method}: time per layer (sum {sum(v for v in ms if v is not None):,.1f} ms)"
