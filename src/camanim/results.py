"""What :func:`camanim.animate` returns: :class:`CamResult` (one image, target and method) and
:class:`CamSet` (several), as data, with the verbs that draw, save and show them.

A result is drawn from memory: ``frames()`` renders, ``save()`` writes a run folder once (frames,
videos, ``cams.npz``, manifest, ybROAD files when scored, report), ``show()`` and the notebook's
``_repr_html_`` build the report's viewer from the result itself, writing nothing.
"""

from __future__ import annotations

import dataclasses
import html
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .compute import LayerView, LazyCams, Row, UnitVectors
from .draw import (
    NORMALISATIONS,
    FrameRenderer,
    FrameStyle,
    Montage,
    Stripes,
    global_range,
    normalise,
    normalised_view,
    overlay,
    render_frames,
)
from .errors import InputError
from .figures import FigureOptions, FigureRun, write_figure
from .metrics import LayerCurve, agreement, road_curve, write_agreement, write_metric
from .report import data_uri, render_report, write_compare, write_index, write_report
from .road import YbRoad, write_ybroad
from .rundir import (
    RunView,
    SavedCams,
    SaveOptions,
    names,
    run_manifest,
    set_manifest,
    staged_dir,
    with_metrics,
    with_outputs,
    with_ybroad,
    write_cams,
    write_manifest,
    write_media,
)
from .settings import options_or_keywords
from .trace import LayerRecord
from .version import __version__

Progress = Callable[[str, int, int], None]

#: the panel width (px) of the notebook view's contact sheets
NOTEBOOK_WIDTH = 80


def _versions() -> dict[str, str]:
    return {"camanim": __version__, "torch": torch.__version__}


def display_html(text: str) -> None:
    """Show HTML ``text`` in the running notebook through IPython.

    Raises:
        RuntimeError: IPython is not installed (not in a notebook).
    """
    try:
        from IPython.display import HTML, display
    except ImportError as exc:
        raise RuntimeError("show() needs IPython (a Jupyter notebook); use save() and open report.html") from exc
    display(HTML(text))


@dataclass
class Target:
    """What was explained: a class (its index, its label, None without labels, and its probability), or
    a target on the model's output (``kind="value"``: its name as ``label``, its value as ``score``).

    A class's probability is the softmax's, or the sigmoid's for ``score="sigmoid"`` and one-logit
    models (the result's ``options["probability"]`` says which).

    Attributes:
        index: the class index (-1 for a target on the model's output).
        label: the class's name, or the target's name (its label or ``repr``, ``seg:15``, ``similar:ref.png``).
        score: the class's probability, or the target's value, on the plain input.
        kind: ``class`` or ``value``.
        head: for a ``value`` target, the target as ROAD scores it again (:class:`camanim.trace.TargetHead`).
        region: a segmentation target's (h, w) bool mask (outlined on the frames), or None.
    """

    index: int
    label: str | None
    score: float
    kind: str = "class"
    head: Any = field(default=None, repr=False)
    region: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """``{"index", "label", "score"}`` as ``manifest.json`` keeps it (score rounded to 6 digits); a target
        on the model's output has ``"index": null`` and ``"kind": "value"``."""
        if self.kind == "value":
            return {"index": None, "label": self.label, "score": round(self.score, 6), "kind": "value"}
        return {"index": self.index, "label": self.label, "score": round(self.score, 6)}

    def describe(self) -> str:
        """One line: ``Egyptian cat (#285, p=0.771)``, ``class #3 (p=0.5)`` or ``seg:15 (value 12.3)``."""
        if self.kind == "value":
            return f"{self.label} (value {self.score:.4g})"
        return f"{self.label} (#{self.index}, p={self.score:.3f})" if self.label else \
            f"class #{self.index} (p={self.score:.3f})"


class _WholeCams:
    """``CamResult.cams``: kept as given (a tensor, or a :class:`camanim.compute.LazyCams` of layer maps),
    read as the whole (L, H, W) tensor, made on the first read and kept (L x H x W x 4 bytes)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> torch.Tensor:
        if obj is None:
            raise AttributeError(self.name)  # no default: the field is required
        whole = obj.__dict__.get("_whole_cams")
        if whole is None:
            lazy: LazyCams = obj.__dict__["lazy_cams"]
            whole = lazy.stack()
            obj.__dict__["_whole_cams"] = whole
        return whole

    def __set__(self, obj: Any, value: torch.Tensor | LazyCams) -> None:
        obj.__dict__["lazy_cams"] = LazyCams.of(value)
        obj.__dict__.pop("_whole_cams", None)


@dataclass
class CamResult:
    """CAMs for every recorded layer of one image, and everything needed to draw and score them.

    Attributes:
        cams: raw CAMs (L, H, W) float32: after ReLU, upsampled to input size, not scaled; for a
            volume (3-D model), (L, D, H, W). A result keeps them at layer resolution
            (:attr:`lazy_cams`); reading ``cams`` makes the whole stack once and keeps it (L x H x W x 4
            bytes: 1.6 GB for EfficientNet-B7's 1,097 layers at 600 x 600). Drawing, saving and the
            notebook view never make it. Given a tensor or a :class:`camanim.compute.LazyCams`.
        lazy_cams: the same CAMs as a :class:`camanim.compute.LazyCams`: indexed like ``cams``
            (``lazy_cams[i]``, ``lazy_cams[a:b]``), each read upsamples only the layers asked for.
        layers: one record per layer call, in execution order.
        method: the method's registry name.
        target: the explained class.
        image: the display image (H, W, 3) uint8 the input was made from; for a volume, the
            montage of its slices (:attr:`montage`).
        input_tensor: the model input (1, C, H, W), or (1, C, D, H, W) for a volume.
        model: the explained model (for ybROAD), or None.
        model_info, image_info: provenance, as ``manifest.json`` keeps it.
        seconds: wall time per stage.
        vectors: non-spatial layers' 1-D evidence (drawn as stripes), or None.
        saved_dir: the run folder once saved.
        options: the computation's settings, as ``manifest.json`` keeps them.
        road: the ybROAD of these CAMs once scored (:func:`camanim.ybroad`); saved with the run.
        metrics: the metrics beside ybROAD once scored (:func:`camanim.score_metrics`), ``{name: LayerCurve}``;
            saved with the run (``metric_<name>.*``, ``metrics_agreement.*``, the report's table).
        saved_with: the options of the last :meth:`save` (the notebook view shows what was saved).
        montage: for a volume, which slices a frame shows (:class:`camanim.draw.Montage`); None for images.
        top: the image's most probable classes (up to five, most probable first; ``top[0]`` is the
            prediction), whatever the explained target.
        guided: the input's guided backpropagation (C, H, W) with ``guided=True`` (``--guided``): frames
            are then Guided Grad-CAM pictures, each layer's normalised CAM times it; else None.
        maps: the CAMs at layer resolution, one (h, w) map per layer ((d, h, w) for a volume; None
            where the CAM is zeros), whose upsampling :attr:`cams` is; what ``cams.npz`` stores. None
            where :attr:`cams` is not such an upsampling (``aug_smooth``): ``cams.npz`` then holds
            :attr:`cams` whole.
    """

    cams: torch.Tensor = _WholeCams()  # type: ignore[assignment]
    layers: list[LayerRecord]
    method: str
    target: Target
    image: np.ndarray
    input_tensor: torch.Tensor
    model: nn.Module | None = None
    model_info: dict[str, Any] = field(default_factory=dict)
    image_info: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    vectors: UnitVectors | None = None
    saved_dir: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)
    road: YbRoad | None = None
    saved_with: SaveOptions | None = None
    montage: Montage | None = None
    top: list[Target] = field(default_factory=list)
    metrics: dict[str, LayerCurve] | None = None
    guided: torch.Tensor | None = None
    maps: list[torch.Tensor | None] | None = None

    def metric_curves(self) -> dict[str, LayerCurve]:
        """Every metric scored on this result, ybROAD first (as ``road``), then :attr:`metrics`."""
        curves = {"road": road_curve(self.road)} if self.road is not None else {}
        curves.update(self.metrics or {})
        return curves

    def metrics_manifest(self, files: dict[str, dict[str, str]]) -> dict[str, Any]:
        """The manifest's ``metrics`` entry (:func:`camanim.rundir.with_metrics`) with the written ``files``."""
        curves = self.metric_curves()
        return {
            "files": files,
            "values": {m: [None if not np.isfinite(v) else float(v) for v in c.values] for m, c in curves.items()},
            "higher_is_better": {m: c.higher_is_better for m, c in curves.items()},
            "chance": {m: None if c.band is None else [float(b) for b in c.band] for m, c in curves.items()},
            "agreement": self.metrics_table(),
        }

    def metrics_table(self) -> dict[str, Any] | None:
        """Each scored metric's best layer and the Spearman correlations between them (None: none scored)."""
        curves = self.metric_curves()
        return agreement(curves) if curves else None

    @classmethod
    def from_row(cls, row: Row, image: np.ndarray, image_info: dict[str, Any], model: nn.Module | None,
                 model_info: dict[str, Any], montage: Montage | None = None) -> CamResult:
        """A result from one row of :func:`camanim.compute.explain` and its image's display and provenance
        (for a volume, the montage its frames show)."""
        return cls(cams=row.cams, layers=row.records, method=row.method,
                   target=Target(row.target, row.label, row.probability, row.kind, row.head, row.region), image=image,
                   input_tensor=row.input_tensor, model=model, model_info=model_info, image_info=image_info,
                   seconds=row.seconds, vectors=row.vectors, options=row.options, montage=montage,
                   top=[Target(t["index"], t["label"], t["score"]) for t in row.top], guided=row.guided,
                   maps=row.maps)

    def guided_image(self) -> np.ndarray | None:
        """The guided backpropagation as an (H, W, C) float32 array for the frames, or None without ``--guided``."""
        return None if self.guided is None else self.guided.detach().cpu().permute(1, 2, 0).numpy()

    lazy_cams: LazyCams = field(init=False, repr=False, compare=False)

    def normalised(self, kind: str = "local") -> torch.Tensor:
        """CAMs (L, H, W) scaled to [0, 1], ``local`` (per layer) or ``global`` (one scale for the network).

        Made whole here (L x H x W x 4 bytes); :meth:`normalised_view` reads them a run of layers at a time.

        Raises:
            ValueError: an unknown ``kind``.
        """
        return self.normalised_view(kind).tensor()

    def normalised_view(self, kind: str = "local", bounds: tuple[torch.Tensor, torch.Tensor] | None = None
                        ) -> LayerView:
        """:meth:`normalised` as a view, scaled a run of layers at a time (see :func:`camanim.draw.normalised_view`).

        Raises:
            ValueError: an unknown ``kind``.
        """
        return normalised_view(self.lazy_cams, kind, bounds=bounds)

    def planes(self, kind: str = "local") -> torch.Tensor:
        """What the frames show: :meth:`normalised` maps (L, H, W), or for a volume their montages.

        Raises:
            ValueError: an unknown ``kind``.
        """
        return self.planes_view(kind).tensor()

    def planes_view(self, kind: str = "local", bounds: tuple[torch.Tensor, torch.Tensor] | None = None
                    ) -> LayerView:
        """:meth:`planes` as a view, made a run of layers at a time (``bounds``: the global min and max, if known).

        Raises:
            ValueError: an unknown ``kind``.
        """
        normed = self.normalised_view(kind, bounds)
        if self.montage is None:
            return normed
        montage = self.montage
        return normed.map(montage.planes, montage.planes(torch.zeros((1, *normed.shape[1:]))).shape[1:])

    def stripes(self, style: FrameStyle = FrameStyle()) -> Stripes | None:
        """How non-spatial layers are drawn: their 1-D evidence as a stripe (None: no vectors kept)."""
        return Stripes(self.vectors, style.colormap) if self.vectors is not None else None

    def frames(self, kind: str = "local", style: FrameStyle = FrameStyle(),
               progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Rendered frames (L, H', W', 3) uint8 for one normalisation (H', W': panel plus caption and strip)."""
        return render_frames(self.image, self.planes_view(kind), self.layers, kind, style, progress=progress,
                             stripes=self.stripes(style), title=self.caption_title(),
                             guided=self.guided_image(), outline=self.target.region, method=self.method)

    def caption_title(self) -> str:
        """What the frames' captions name besides the layer: the method and the class (``gradcam · tabby``)."""
        t = self.target
        return f"{self.method} · {t.label if t.label else f'class {t.index}'}"

    def manifest(self) -> dict[str, Any]:
        """The run's ``manifest.json`` before its outputs are written (see :mod:`camanim.rundir.manifest`);
        ``top``: the most probable classes (the report's top-5)."""
        manifest = run_manifest(model=self.model_info, image=self.image_info,
                            size=tuple(int(s) for s in self.lazy_cams.shape[1:]), method=self.method,
                            target=self.target.to_dict(), versions=_versions(), seconds=self.seconds,
                            options=self.options, layers=[r.to_dict() for r in self.layers])
        if self.top:
            manifest["top"] = [t.to_dict() for t in self.top]
        return manifest

    def view(self, style: FrameStyle = FrameStyle(), normalisations: Sequence[str] = NORMALISATIONS,
             fps: float = 10, frames: bool = True) -> RunView:
        """This result as the report reads a run, frames drawn in memory (nothing is written;
        ``frames=False``: none drawn)."""
        manifest = with_outputs(self.manifest(), normalisations=normalisations, fps=fps, count=len(self.layers),
                                videos={}, render=_render_settings(style, fps))
        if self.metrics:
            with_metrics(manifest, self.metrics_manifest({}))
        renderer = FrameRenderer(self.image, self.layers, style, self.stripes(style), self.caption_title(),
                                 self.guided_image(), self.target.region, self.method)  # captions drawn once
        return RunView(path=None, manifest=manifest, layers=manifest["layers"],
                       frames={n: renderer.render(self.planes_view(n), n) for n in normalisations} if frames else {},
                       ybroad=self.road.to_json_dict() if self.road is not None else None)

    def _repr_html_(self) -> str:
        """The report's viewer inline in Jupyter, built from this result (nothing is read or written):
        one fragment with one small contact sheet per normalisation (caption-free panels,
        :data:`NOTEBOOK_WIDTH` px wide; visible without JavaScript too); once saved, with the
        normalisations and style it was saved with."""
        opts = self.saved_with or SaveOptions()
        view = self.view(opts.style, opts.normalisations, opts.fps, frames=False)
        small = dataclasses.replace(opts.style, width=NOTEBOOK_WIDTH)
        renderer = FrameRenderer(self.image, self.layers, small, self.stripes(small))
        size = renderer.box[2:]  # the picture's (height, width) in the panel
        view.frames.update({n: renderer.panels(normalised_view(self.lazy_cams, n, size=size), n)
                            for n in opts.normalisations})
        return render_report(view, inline=True)

    def __repr__(self) -> str:
        t = self.target
        if t.kind == "value":  # a target on the model's output: its name and value, no class or probability
            target = f"{t.label!r}, value={t.score:.4g}"
        else:
            target = (f"{t.index} ({t.label})" if t.label else str(t.index)) + f", p={t.score:.3f}"
        model = self.model_info.get("name") or self.model_info.get("source") or "model"
        where = f", saved={str(self.saved_dir)!r}" if self.saved_dir is not None else ""
        road = ", ybroad" if self.road is not None else ""
        return (f"CamResult(model={model!s}, method={self.method}, target={target}, "
                f"layers={len(self.layers)}, size={tuple(self.lazy_cams.shape[-2:])}{road}{where})")

    def _layer_index(self, layer: str | int) -> int:
        if isinstance(layer, int) and not isinstance(layer, bool):
            if not -len(self.layers) <= layer < len(self.layers):
                raise InputError(f"layer {layer}: out of range, this result has {len(self.layers)} layers")
            return layer % len(self.layers)
        names_ = [r.name for r in self.layers]
        if layer not in names_:
            close = ", ".join(n for n in names_ if str(layer) in n)[:200] or ", ".join(names_[:5]) + ", ..."
            raise InputError(f"layer {layer!r}: not in this result; layers include {close}")
        return names_.index(layer)

    def cam(self, layer: str | int, kind: str = "raw") -> np.ndarray:
        """One layer's CAM (H, W) float32 ((D, H, W) for a volume), by name (its first call) or index.

        Args:
            layer: the layer's name (``"blocks.6.0"``) or its 0-based index in :attr:`layers`.
            kind: ``raw`` (after ReLU, not scaled), ``local`` (0..1 of this layer) or ``global``
                (0..1 of the network's max).

        Raises:
            InputError: an unknown layer or kind, or a non-spatial layer (no map over the image: its
                1-D evidence is in :attr:`vectors`).
        """
        i = self._layer_index(layer)
        record = self.layers[i]
        if record.non_spatial:
            shape = " x ".join(str(s) for s in record.shape)
            raise InputError(f"layer {record.name!r} is non-spatial ({shape}): it has no map over the image; "
                             "its 1-D evidence is in result.vectors (the frames draw it as a stripe)")
        if kind == "raw":
            return self.lazy_cams[i].detach().float().cpu().numpy()
        if kind not in NORMALISATIONS:
            raise InputError(f"kind {kind!r}: use raw, {', '.join(NORMALISATIONS)}")
        if kind == "local":  # the layer's own min and max: that layer alone
            return normalise(self.lazy_cams[i:i + 1], kind)[0].detach().float().cpu().numpy()
        return self.normalised_view(kind)[i].detach().float().cpu().numpy()

    def overlay(self, layer: str | int, kind: str = "local", colormap: str = "jet", alpha: float = 0.5) -> np.ndarray:
        """One layer's CAM over the image, caption-free, at the image's size: (H, W, 3) uint8.

        Like pytorch-grad-cam's ``show_cam_on_image`` (see :func:`camanim.draw.overlay`).

        Raises:
            InputError: an unknown layer or kind, a non-spatial layer, or a volume's result (its frames are
                slice montages).
            ValueError: an unknown colormap or alpha outside [0, 1].
        """
        if self.montage is not None:
            raise InputError("overlay: this result is a volume; use cam(layer) for its (D, H, W) map, "
                             "or frames() for the slice montages")
        if kind not in NORMALISATIONS:
            raise InputError(f"kind {kind!r}: use {', '.join(NORMALISATIONS)}")
        return overlay(self.image, self.cam(layer, kind), colormap, alpha)

    def show(self) -> None:
        """Display the viewer in a notebook (once: nothing is returned for Jupyter to show again).

        Raises:
            RuntimeError: not in a notebook (IPython missing).
        """
        display_html(self._repr_html_())

    def figure(self, out: str | Path, *, others: Sequence[CamResult | str | Path] = (),
               options: FigureOptions | None = None, style: FrameStyle = FrameStyle(), **keywords: Any
               ) -> dict[str, Path]:
        """Write a figure of this result (and ``others``) as PNG and vector PDF, from memory.

        Alone: a filmstrip by depth, local and global rows; with ``others`` of the same model (other
        methods): a methods × depths grid; of other models: a models × depths grid aligned by
        relative depth; with ``layer=NAME``: that layer's normalisations side by side.

        Args:
            out: ``fig.pdf``, ``fig.png`` or ``fig``: both ``fig.png`` and ``fig.pdf`` are written.
            others: more results, or run folders, for a grid (rows in this order, this one first).
            options: a :class:`camanim.figures.FigureOptions`, or its fields as ``keywords``
                (``depths``, ``layers``, ``norms``, ``layer``, ``with_road``, ``spatial_only``, ``dpi``, ...).
            style: the colormap and opacity of the overlay (the run's own once saved).

        Returns:
            ``{"png": path, "pdf": path}``.

        Raises:
            InputError: bad options or output path, or options the results cannot satisfy
                (``with_road`` before :func:`camanim.ybroad`, an unknown layer).
            TypeError: ``options`` given beside a keyword set to something else than its default.
        """
        opts = options_or_keywords(options, FigureOptions, keywords)
        if self.montage is not None:
            raise InputError("figures are drawn for 2-D images only: for a volume use the frames, videos and report")
        runs = [r._figure_run(style) if isinstance(r, CamResult) else r for r in (self, *others)]
        return write_figure(runs, out, opts)[0]

    def _figure_run(self, style: FrameStyle = FrameStyle()) -> FigureRun:
        """This result as a figure reads a run (see :mod:`camanim.figures`), nothing drawn or written."""
        if self.saved_with is not None and style == FrameStyle():
            style = self.saved_with.style
        manifest = with_outputs(self.manifest(), normalisations=NORMALISATIONS, fps=10, count=len(self.layers),
                                videos={}, render=_render_settings(style, 10))
        view = RunView(path=None, manifest=manifest, layers=manifest["layers"], frames={},
                       ybroad=self.road.to_json_dict() if self.road is not None else None)
        fields = _vector_fields(self.vectors)
        return FigureRun(view=view, cams=self.lazy_cams.stack().detach().float().cpu().numpy(), image=self.image,
                         vectors=fields.get("vectors"), vector_kind=fields.get("vector_kind", ""), label="result")

    def save(
        self,
        out_dir: str | Path,
        *,
        normalisations: Sequence[str] = NORMALISATIONS,
        fps: float = 10,
        formats: Sequence[str] = ("mp4",),
        video: bool = True,
        report: bool = True,
        style: FrameStyle = FrameStyle(),
        options: SaveOptions | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Path]:
        """Write the run folder: ``manifest.json``, ``cams.npz``, ``frames/<norm>/NNNN.png``, videos,
        the ybROAD files when :attr:`road` is set, and ``report.html``.

        Everything is written to a temporary folder beside ``out_dir`` and moved into place only
        when complete, so a failure leaves nothing half-written.

        Args:
            out_dir: the run folder (an earlier run there is replaced).
            normalisations, fps, formats, video, report, style: see :class:`camanim.rundir.SaveOptions`;
                ``options`` gives them all at once instead.
            progress: called as ``progress(stage, done, total)``.

        Returns:
            What was written, by key: ``cams``, ``frames_<norm>``, ``<kind>_<format>`` videos,
            ``manifest``, ``ybroad_csv/json/png`` when scored, ``report``.

        Raises:
            InputError: an unknown normalisation or format, fps <= 0, or an output folder that
                cannot be written (a file, a non-run folder, no permission).
            TypeError: ``options`` given beside a keyword set to something else than its default.
        """
        opts = options_or_keywords(options, SaveOptions, dict(
            normalisations=normalisations, fps=fps, formats=formats, video=video, report=report, style=style))
        out = Path(out_dir)
        with staged_dir(out) as tmp:
            written, _ = self._save_into(tmp, opts, progress)
        self.saved_dir, self.saved_with = out, opts
        return {k: out / v.relative_to(tmp) for k, v in written.items()}

    def _save_into(self, folder: Path, opts: SaveOptions, progress: Progress | None
                   ) -> tuple[dict[str, Path], RunView]:
        """Write this run into ``folder`` (made here); returns what was written and the run as a view."""
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        renderer = FrameRenderer(self.image, self.layers, opts.style, self.stripes(opts.style), self.caption_title(),
                                 self.guided_image(), self.target.region, self.method)
        cams_path = folder / names.CAMS
        # the network's min and max for the global frames: one pass over the CAMs, a run of layers at a time
        bounds = global_range(self.lazy_cams) if "global" in opts.normalisations else None
        media = write_media(folder, renderer, lambda n: self.planes_view(n, bounds), opts, progress=progress,
                            also=[lambda: write_cams(cams_path, self.saved_cams())],
                            encode=data_uri if opts.report else None)
        written: dict[str, Path] = {"cams": cams_path}
        written.update({f"frames_{n}": path for n, path in media.frames.items()})
        written.update({f"{kind}_{fmt}": path for (kind, fmt), path in media.videos.items()})
        self.seconds["save"] = time.perf_counter() - t0
        manifest = with_outputs(self.manifest(), normalisations=opts.normalisations, fps=opts.fps,
                                count=len(self.layers), render=_render_settings(opts.style, opts.fps),
                                videos=_video_names(media.videos), cams=cams_path)
        if self.road is not None:
            written.update({f"ybroad_{k}": p for k, p in write_ybroad(folder, self.road).items()})
            with_ybroad(manifest, self.road.summary())
        if self.metrics:
            files = {}
            for name, curve in self.metrics.items():
                paths = write_metric(folder, curve)
                files[name] = {k: v.name for k, v in paths.items()}
                written.update({f"metric_{name}_{k}": v for k, v in paths.items()})
            table = self.metrics_table()
            written.update({f"metrics_agreement_{k}": v for k, v in write_agreement(folder, table).items()})
            with_metrics(manifest, self.metrics_manifest(files))
        written["manifest"] = write_manifest(folder, manifest)
        view = RunView(path=folder, manifest=manifest, layers=manifest["layers"], frames=dict(media.files),
                       ybroad=self.road.to_json_dict() if self.road is not None else None, encoded=media.encoded)
        if opts.report:
            if progress:
                progress("report", 0, 1)
            written["report"] = write_report(view)
            if progress:
                progress("report", 1, 1)
        return written, view

    def saved_cams(self) -> SavedCams:
        """What ``save()`` writes to ``cams.npz``: the layer maps and their size when :attr:`maps` is
        set (else the CAMs whole), names, input, image, target and non-spatial vectors."""
        names_ = np.array([r.name for r in self.layers])
        inp = self.input_tensor.detach().float().cpu().numpy()
        if self.maps is None or len(self.maps) != len(self.layers):
            return SavedCams(cams=self.cams.detach().float().cpu().numpy(), names=names_, input=inp, image=self.image,
                             target=self.target.index, **_vector_fields(self.vectors))
        return SavedCams(cams=None, names=names_, input=inp, image=self.image, target=self.target.index,
                         maps=_numpy_maps(self.maps), size=tuple(int(s) for s in self.lazy_cams.shape[1:]),
                         **_vector_fields(self.vectors))


def _numpy_maps(maps: Sequence[torch.Tensor | None]) -> list[np.ndarray | None]:
    """Layer maps as float32 arrays; maps that are views of one memory (layers sharing an output) become
    one array object, so ``cams.npz`` stores them once."""
    seen: dict[tuple[int, tuple[int, ...], tuple[int, ...]], np.ndarray] = {}
    out: list[np.ndarray | None] = []
    for m in maps:
        if m is None:
            out.append(None)
            continue
        key = (m.data_ptr(), tuple(m.shape), tuple(m.stride()))
        if key not in seen:
            seen[key] = m.detach().float().cpu().numpy()
        out.append(seen[key])
    return out


def _vector_fields(vectors: UnitVectors | None) -> dict[str, Any]:
    """``SavedCams``' ``vectors`` and ``vector_kind`` for a result's non-spatial evidence (none: nothing)."""
    if vectors is None:
        return {}
    return {"vectors": [None if v is None else v.numpy() for v in vectors.values], "vector_kind": vectors.kind}


def _video_names(videos: dict[tuple[str, str], Path]) -> dict[str, str]:
    """Kind -> file name for the manifest: the MP4 where both formats were written (browsers play it)."""
    out: dict[str, str] = {}
    for (kind, fmt), path in videos.items():
        if kind not in out or fmt == "mp4":
            out[kind] = path.name
    return out


def _render_settings(style: FrameStyle, fps: float) -> dict[str, Any]:
    return {"fps": fps, "colormap": style.colormap, "alpha": style.alpha, "width": style.width}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._") or "x"


def _image_names(infos: Sequence[dict[str, Any]]) -> list[str]:
    """A folder name per image: the file's stem or the sample's name, made unique."""
    out: list[str] = []
    for i, info in enumerate(infos):
        src = str(info.get("source", ""))
        if src.startswith("sample:"):
            base = src.split(":", 1)[1]
        elif src and src != "tensor":
            base = Path(src).stem
        else:
            base = f"image{i + 1}"
        base = _safe(base)
        name, n = base, 2
        while name in out:
            name, n = f"{base}-{n}", n + 1
        out.append(name)
    return out


@dataclass
class CamSet:
    """The results of one call over several images, targets or methods (a sequence of :class:`CamResult`).

    Saved as a folder tree::

        OUT/manifest.json                                what is where: runs, methods, grids
        OUT/<image>/class_<k>/<method>/...               one ordinary run folder per result
        OUT/<image>/class_<k>/camanim_methods_grid.mp4   one tile per method, the same layer at a time

    A level appears only when it varies: ``<image>`` with several images, ``class_<k>`` with
    ``topk`` targets, ``<method>`` with several methods.

    Attributes:
        results: one per (image, target, method), by image, then target, then method.
        folders: each result's folder, relative to the output folder.
        methods: the method names, in the order asked.
    """

    results: list[CamResult]
    folders: list[str]
    methods: list[str]
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def build(cls, results: Sequence[CamResult], images: Sequence[int], n_images: int, methods: Sequence[str],
              multi_target: bool) -> CamSet:
        """The set of ``results`` (``images[i]``: which image result i shows), with a folder each."""
        infos: dict[int, dict[str, Any]] = {}
        for img, res in zip(images, results):
            infos.setdefault(img, res.image_info)
        image_names = _image_names([infos.get(i, {}) for i in range(n_images)])
        folders = []
        for img, res in zip(images, results):
            parts = ([image_names[img]] if n_images > 1 else []) + ([f"class_{res.target.index}"] if multi_target else [])
            parts += [_safe(res.method)] if len(methods) > 1 else []
            folders.append("/".join(parts) or ".")
        return cls(list(results), folders, list(methods))

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[CamResult]:
        return iter(self.results)

    def __getitem__(self, i: int) -> CamResult:
        return self.results[i]

    def __repr__(self) -> str:
        first = self.results[0] if self.results else None
        model = (first.model_info.get("name") or "model") if first else "-"
        images = len({f.split("/", 1)[0] for f in self.folders}) if self.results else 0
        targets = sorted({r.target.index for r in self.results})
        saved = {str(r.saved_dir) for r in self.results if r.saved_dir is not None}
        where = f", saved under {os.path.commonpath(sorted(saved))!r}" if saved else ""
        return (f"CamSet({len(self.results)} results: model={model}, methods={','.join(self.methods)}, "
                f"targets={','.join(map(str, targets[:10]))}{'...' if len(targets) > 10 else ''}, "
                f"images={images}, layers={len(first.layers) if first else 0}{where})")

    def _repr_html_(self) -> str:
        """Every result's viewer inline in Jupyter, each folded under its folder, method and target (the first open)."""
        parts = []
        for i, (folder, res) in enumerate(zip(self.folders, self.results)):
            target = res.target.describe()
            summary = f"<code>{html.escape(folder)}</code> · {html.escape(res.method)} · {html.escape(target)}"
            parts.append(f"<details{' open' if i == 0 else ''}><summary>{summary}</summary>{res._repr_html_()}</details>")
        return "".join(parts)

    def show(self) -> None:
        """Display every result's viewer in a notebook (see :meth:`CamResult.show`)."""
        display_html(self._repr_html_())

    def by_folder(self) -> dict[str, CamResult]:
        """Folder -> result."""
        return dict(zip(self.folders, self.results))

    def groups(self) -> dict[str, list[int]]:
        """Folder of each (image, target) -> the indices of its results (one per method)."""
        out: dict[str, list[int]] = {}
        for i, folder in enumerate(self.folders):
            parent = folder.rsplit("/", 1)[0] if len(self.methods) > 1 and "/" in folder else (
                "." if len(self.methods) > 1 else folder)
            out.setdefault(parent, []).append(i)
        return out

    def manifest(self, video: bool = True) -> dict[str, Any]:
        """The top ``manifest.json`` of the tree (``"kind": "set"``); ``grids``: the methods grid videos
        (none with ``video=False``)."""
        first = self.results[0]
        grids = ([f"{g}/{names.GRID_VIDEO}".removeprefix("./") for g in self.groups()]
                 if len(self.methods) > 1 and video else [])
        return set_manifest([{"folder": f, "image": r.image_info, "target": r.target.to_dict(), "method": r.method}
                             for f, r in zip(self.folders, self.results)],
                            model=first.model_info, methods=self.methods, options=first.options,
                            versions=_versions(), grids=grids)

    def save(self, out_dir: str | Path, *, progress: Progress | None = None, options: SaveOptions | None = None,
             **keywords: Any) -> dict[str, Path]:
        """Write every result's run folder, one methods grid video per (image, target), and a top manifest.

        ``keywords`` are :meth:`CamResult.save`'s (``normalisations``, ``fps``, ``formats``, ``video``,
        ``report``, ``style``), or ``options`` gives them all. The tree is written beside ``out_dir``
        and moved into place when complete. Each grid is drawn from the frames in memory.

        Raises:
            InputError: see :meth:`CamResult.save`.
        """
        opts = options_or_keywords(options, SaveOptions, keywords)
        out = Path(out_dir)
        written: dict[str, Path] = {}
        grid = len(self.methods) > 1  # the page always; its grid videos with the run's videos
        with staged_dir(out) as tmp:
            for group, idx in self.groups().items():
                views = []
                for i in idx:
                    folder = self.folders[i]
                    _, view = self.results[i]._save_into(tmp / folder, opts, progress)
                    written[folder] = out / folder
                    views.append(view)
                if grid:
                    # named by where they will be, not by the staging folder they are written to
                    views = [dataclasses.replace(v, path=out / self.folders[i]) for v, i in zip(views, idx)]
                    grid_files = write_compare(views, tmp / group, fps=max(1, int(round(float(opts.fps)))),
                                               video_name=names.GRID_VIDEO, video=opts.video)
                    for path in grid_files.values():  # the page and both grid videos
                        rel = path.relative_to(tmp).as_posix()
                        written[rel] = out / rel
                del views
            if self.folders != ["."]:  # one result in the folder itself: its own manifest stays the folder's
                write_manifest(tmp, self.manifest(video=opts.video))
            written["manifest"] = out / names.MANIFEST
            if opts.report and len(self.results) > 1:
                links = [(f"{folder}/{names.REPORT}".removeprefix("./"), folder, r.method, r.target.to_dict(),
                          len(r.layers)) for folder, r in zip(self.folders, self.results)]
                grids = [k for k in written if k.endswith(names.COMPARE_HTML)]
                written["index"] = out / write_index(tmp, links, grids).name
        for res, folder in zip(self.results, self.folders):
            res.saved_dir, res.saved_with = out / folder, opts
        return written
