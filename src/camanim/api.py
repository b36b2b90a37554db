"""The public verbs: :func:`animate` a model on an image, then save, show or score the result."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from . import __version__
from .errors import InputError
from .methods import get_methods
from .nonspatial import Stripes, UnitVectors
from .normalise import NORMALISATIONS, normalise
from .render import FrameRenderer, FrameStyle, render_frames
from .runs import CamSet, as_images, explain, is_single
from .sources import (
    DEFAULT_IMAGE,
    DEFAULT_MODEL,
    LoadedModel,
    Preprocess,
    default_preprocess,
    load_image,
    load_model,
)
from .targets import is_multi_target
from .trace import LayerRecord, LayerSpec, run_trace
from .video import write_gif, write_mp4, write_png

Progress = Callable[[str, int, int], None]


@dataclass
class Target:
    """The explained class."""

    index: int
    label: str | None
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "score": round(self.score, 6)}


@dataclass
class CamResult:
    """CAMs for every recorded layer of one image, and everything needed to draw and score them.

    Attributes:
        cams: raw CAMs [L, H, W] (after ReLU, upsampled to input size, not scaled).
        layers: one record per layer call, in execution order.
        image: the display image (H, W, 3) uint8 the input was made from.
        input_tensor: the model input (1, C, H, W).
    """

    cams: torch.Tensor
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

    def _repr_html_(self) -> str:
        """The report's viewer inline in Jupyter: one self-contained fragment, frames inlined."""
        from .report import report_html

        if self.saved_dir is not None and (self.saved_dir / "manifest.json").is_file():
            return report_html(self.saved_dir, inline=True)
        # Not saved: the report reads a run folder, so draw one in a scratch folder that is gone
        # once its frames are inlined.
        with tempfile.TemporaryDirectory(prefix="camanim-") as scratch:
            self._write(Path(scratch), norms=NORMALISATIONS, fps=10, formats=(), video=False, style=FrameStyle(),
                        progress=None)
            return report_html(scratch, inline=True)

    def show(self) -> None:
        """Display the viewer in a notebook (once: nothing is returned for Jupyter to show again)."""
        display_html(self._repr_html_())

    def normalised(self, kind: str = "local") -> torch.Tensor:
        """CAMs scaled to [0, 1], ``local`` (per layer) or ``global`` (one scale for the network)."""
        return normalise(self.cams, kind)

    def frames(self, kind: str = "local", style: FrameStyle = FrameStyle(),
               progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Rendered frames (L, H, W, 3) uint8 for one normalisation."""
        return render_frames(self.image, self.normalised(kind), self.layers, kind, style, progress=progress,
                             stripes=self.stripes(style))

    def stripes(self, style: FrameStyle = FrameStyle()) -> Stripes | None:
        """How non-spatial layers are drawn: their 1-D evidence as a stripe (None: no vectors kept)."""
        return Stripes(self.vectors, style.colormap) if self.vectors is not None else None

    def manifest(self) -> dict[str, Any]:
        return {
            "model": self.model_info,
            "image": {**self.image_info, "size": [int(self.cams.shape[-2]), int(self.cams.shape[-1])]},
            "method": self.method,
            "target": self.target.to_dict(),
            "versions": {"camanim": __version__, "torch": torch.__version__},
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            **({"options": self.options} if self.options else {}),
            "layers": [r.to_dict() for r in self.layers],
        }

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
        progress: Progress | None = None,
    ) -> dict[str, Path]:
        """Write the run folder: manifest.json, cams.npz, frames/<norm>/NNNN.png, videos, report.html.

        Everything is written to a temporary folder beside ``out_dir`` and moved into place only
        when complete, so a failure leaves nothing half-written.
        """
        for n in normalisations:
            if n not in NORMALISATIONS:
                raise InputError(f"normalisation '{n}' is unknown: use local, global or local,global")
        for f in formats:
            if f not in ("mp4", "gif"):
                raise InputError(f"video format '{f}' is unknown: use mp4, gif or mp4,gif")
        out = Path(out_dir)
        parent = prepare_out_dir(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
        tmp.chmod(0o755)  # mkdtemp's 0700 would make the finished folder private
        try:
            written = self._write(tmp, normalisations, fps, formats, video, style, progress)
            if report:
                from .report import build_report

                if progress:
                    progress("report", 0, 1)
                written["report"] = build_report(tmp)
                if progress:
                    progress("report", 1, 1)
            replace_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.saved_dir = out
        return {k: out / v.relative_to(tmp) for k, v in written.items()}

    def _write(self, tmp: Path, norms: Sequence[str], fps: float, formats: Sequence[str], video: bool,
               style: FrameStyle, progress: Progress | None) -> dict[str, Path]:
        t0 = time.perf_counter()
        total = len(self.layers)
        renderer = FrameRenderer(self.image, self.layers, style, self.stripes(style))
        folders: dict[str, Path] = {}
        videos: list[tuple[str, Path, Future]] = []
        stop = threading.Event()
        frames = {n: _Drawn(renderer.empty(), stop) for n in norms}
        # Frames are drawn here a chunk at a time; as soon as a chunk is final its PNGs are written
        # (OpenCV releases the GIL) and the encoders (ffmpeg processes fed from threads) take it,
        # so both cores stay busy from the first chunk to the end.
        with ThreadPoolExecutor(max_workers=2) as writers, ThreadPoolExecutor(max_workers=6) as encoders:
            try:
                jobs = [writers.submit(self._write_npz, tmp / "cams.npz")]
                if video:
                    streams: list[tuple[str, Iterable[np.ndarray]]] = [(f"camanim_{n}", frames[n]) for n in norms]
                    if len(norms) == 2:
                        streams.append(("camanim_side_by_side", _SideBySide(*(frames[n] for n in norms))))
                    videos = [(stem, tmp / f"{stem}.{fmt}", encoders.submit(_encode, tmp / f"{stem}.{fmt}", fr, fps, stop))
                              for stem, fr in streams for fmt in formats]
                for n in norms:
                    folders[n] = tmp / "frames" / n
                    folders[n].mkdir(parents=True)
                    done = 0
                    for upto in renderer.draw(self.normalised(n), n, frames[n].array):
                        frames[n].publish(upto)
                        jobs.append(writers.submit(_write_pngs, frames[n].array, folders[n], range(done, upto), stop))
                        done = upto
                        if progress:
                            progress(f"frames {n}", upto, total)
                        _raise_failed([*jobs, *(job for _, _, job in videos)])
                for _, path, job in videos:
                    if progress:
                        progress(f"encode {path.name}", 0, 1)
                    job.result()
                    if progress:
                        progress(f"encode {path.name}", 1, 1)
                for job in jobs:
                    job.result()
            except BaseException:
                stop.set()
                raise
        written: dict[str, Path] = {"cams": tmp / "cams.npz"}
        written.update({f"frames_{n}": folders[n] for n in norms})
        written.update({f"{stem.removeprefix('camanim_')}_{path.suffix[1:]}": path for stem, path, _ in videos})
        self.seconds["save"] = time.perf_counter() - t0
        manifest = self.manifest()
        manifest["normalisations"] = list(norms)
        manifest["fps"] = fps
        manifest["frames"] = {**{n: f"frames/{n}" for n in norms}, "count": total}
        manifest["videos"] = {k.rsplit("_", 1)[0]: p.name for k, p in written.items()
                              if p.suffix in (".mp4", ".gif")}
        manifest["render"] = {"fps": fps, "colormap": style.colormap, "alpha": style.alpha, "width": style.width}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        written["manifest"] = tmp / "manifest.json"
        return written

    def _write_npz(self, path: Path) -> None:
        names = np.array([r.name for r in self.layers])
        np.savez(path, cams=self.cams.detach().float().cpu().numpy(), names=names,
                 input=self.input_tensor.detach().float().cpu().numpy(), image=self.image,
                 target=np.array(self.target.index))


class _Cancelled(Exception):
    """Another part of the save failed: stop this one."""


class _Drawn:
    """Frames filled in order on one thread and read, in order, on others as soon as they are final."""

    def __init__(self, array: np.ndarray, stop: threading.Event) -> None:
        self.array, self.stop = array, stop
        self.done = 0
        self._ready = threading.Condition()

    def publish(self, done: int) -> None:
        with self._ready:
            self.done = done
            self._ready.notify_all()

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self.array)):
            with self._ready:
                while self.done <= i:
                    if self.stop.is_set():
                        raise _Cancelled
                    self._ready.wait(0.1)
            yield self.array[i]


def _raise_failed(jobs: Iterable[Future]) -> None:
    """Re-raise the first exception of a finished job, so a failed writer stops the drawing too."""
    for job in jobs:
        if job.done() and job.exception() is not None:
            raise job.exception()


def _until(stop: threading.Event, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    for frame in frames:
        if stop.is_set():
            raise _Cancelled
        yield frame


def _encode(path: Path, frames: Iterable[np.ndarray], fps: float, stop: threading.Event) -> None:
    if path.suffix == ".mp4":
        write_mp4(path, _until(stop, frames), fps=fps)
    else:
        write_gif(path, np.asarray(list(_until(stop, frames))), fps=fps)


def _write_pngs(frames: np.ndarray, folder: Path, indices: range, stop: threading.Event) -> None:
    for i in indices:
        if stop.is_set():
            return
        write_png(folder / f"{i:04d}.png", frames[i])


class _SideBySide:
    """Local | global frames joined horizontally, made one at a time while encoding."""

    def __init__(self, left: Iterable[np.ndarray], right: Iterable[np.ndarray]) -> None:
        self.left, self.right = left, right

    def __iter__(self) -> Iterator[np.ndarray]:
        for a, b in zip(self.left, self.right):
            yield np.concatenate([a, np.full((a.shape[0], 8, 3), 24, np.uint8), b], axis=1)


def display_html(html: str) -> None:
    """Show ``html`` in the running notebook through IPython."""
    try:
        from IPython.display import HTML, display
    except ImportError as exc:
        raise RuntimeError("show() needs IPython (a Jupyter notebook); use save() and open report.html") from exc
    display(HTML(html))


def prepare_out_dir(out: Path) -> Path:
    """Check ``out`` can be (re)written; return its parent. Refuses to replace a folder that is not a run."""
    if out.exists() and not out.is_dir():
        raise InputError(f"output '{out}' is a file: give a folder path with --out")
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").is_file():
        raise InputError(f"output folder '{out}' is not empty and not a camanim run: choose another --out")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"output folder '{out}' cannot be created ({exc.strerror}): choose a writable --out") from exc
    try:
        probe = tempfile.NamedTemporaryFile(dir=parent, prefix=".camanim-probe-", delete=True)
        probe.close()
    except OSError as exc:
        raise InputError(f"output folder '{out}' is not writable ({exc.strerror}): choose a writable --out") from exc
    return parent


def replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` folder to ``out``, replacing an earlier run there."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{time.time_ns()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def _prepare_input(
    image: Any, preprocess: Callable | None, loaded: LoadedModel | None
) -> tuple[torch.Tensor, np.ndarray, dict[str, Any]]:
    if isinstance(image, torch.Tensor):
        x = image if image.ndim == 4 else image.unsqueeze(0)
        disp = x[0].detach().float().cpu()
        disp = (disp - disp.min()) / (disp.max() - disp.min() + 1e-12)
        disp = disp.mean(0, keepdim=True).expand(3, -1, -1) if disp.shape[0] != 3 else disp
        return x, (disp.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), {"source": "tensor"}
    pil, info = load_image(image)
    if preprocess is None:
        preprocess = loaded.preprocess if loaded is not None else Preprocess.imagenet()
    if isinstance(preprocess, Preprocess):
        x, disp = preprocess(pil)
        return x, disp, info
    # A user transform (e.g. torchvision's): PIL -> (C, H, W) tensor. The display image is the
    # photo resized to the tensor's size, since we cannot know its crop.
    x = preprocess(pil)
    if not isinstance(x, torch.Tensor):
        raise InputError("the preprocess/transform must return a tensor (C, H, W)")
    x = x if x.ndim == 4 else x.unsqueeze(0)
    disp = np.asarray(pil.convert("RGB").resize((x.shape[-1], x.shape[-2]), Image.Resampling.BILINEAR))
    return x, disp, info


def animate(
    model: nn.Module | str | LoadedModel = DEFAULT_MODEL,
    image: Any = DEFAULT_IMAGE,
    *,
    method: str = "gradcam",
    layers: LayerSpec = "all",
    target: int | str | None = None,
    weights: str | Path | None = "default",
    preprocess: Callable | None = None,
    labels: Sequence[str] | None = None,
    device: str | torch.device | None = None,
    eigen_smooth: bool = False,
    seed: int = 0,
    output_key: str | int | None = None,
    progress: Progress | None = None,
    layouts: Mapping[str, str] | None = None,
    skip_non_spatial: bool = False,
    score: str = "logit",
    aug_smooth: bool = False,
    batch_size: int | None = None,
) -> CamResult | CamSet:
    """Compute the CAM of every selected layer in one forward and one backward pass.

    Args:
        model: a model name (built-in, torchvision, timm), a :class:`LoadedModel`, or any ``nn.Module``.
        image: ``sample:NAME``, an image path, a PIL image, an array, or a ready input tensor; a list
            of them (or a tensor batch) explains each image, in one batched pass, with its own target.
        method: a registered method name (``camanim methods``), ``pkg.module:Class``/``file.py:Class``
            (a plugin), or several, ``"gradcam,hirescam,scorecam"`` or a list: they share the pass.
        layers: ``all``, ``leaves``, a glob, ``re:REGEX`` or ``type:Conv2d`` (see :func:`camanim.trace.select_layers`).
        target: class index or label (default: each image's predicted class), ``"topk:K"`` (each
            image's K top classes, one result each), or a list with one target per image.
        weights: for a model name: ``default``, ``none`` or a state dict path.
        preprocess: for an ``nn.Module``: a callable PIL image -> tensor (default: ImageNet recipe).
        labels: class names for an ``nn.Module``.
        device: ``cpu``/``cuda``; default the model's device.
        seed: seeds RandomCAM's weights.
        layouts: ``{layer name: layout}`` overriding layout detection, e.g. ``{"encoder.ln": "TOKENS"}``
            (see :mod:`camanim.layouts`).
        skip_non_spatial: leave out layers without a 2-D map (pooling, flatten, Linear) instead of
            drawing their 1-D evidence as a stripe.
        score: what is explained: the target's ``logit`` or its ``softmax`` probability.
        aug_smooth: test-time augmentation (flip x [0.9, 1, 1.1]) per layer, as pytorch-grad-cam's.
        batch_size: images per extra forward of ScoreCAM/AblationCAM (packed across channels and layers);
            default 8 on the CPU (fastest per image on a laptop-class CPU), 64 on a GPU.

    Returns:
        A :class:`CamResult`; ``result.save(out_dir)`` writes frames, videos and the manifest. With
        several images, methods or ``topk`` targets, a :class:`~camanim.runs.CamSet` of them, whose
        ``save(out_dir)`` writes one run folder each (``OUT/<image>/class_<k>/<method>/``) and a
        ``camanim_methods_grid.mp4`` per image and target.

    Example:
        >>> result = camanim.animate("resnet18", "sample:cat", weights="none", layers="layer*")
        >>> result.save("out")
    """
    t0 = time.perf_counter()
    loaded: LoadedModel | None = None
    if isinstance(model, str):
        loaded = load_model(model, weights)
    elif isinstance(model, LoadedModel):
        loaded = model
    if loaded is not None:
        module, info, label_list = loaded.module, dict(loaded.info), loaded.labels
    elif isinstance(model, nn.Module):
        module, info, label_list = model, {"name": type(model).__name__, "weights": "user module"}, None
    else:
        raise TypeError(f"model must be a name, a LoadedModel or an nn.Module, not {type(model).__name__}")
    if labels is not None:
        label_list = list(labels)
    methods = get_methods(method)
    if preprocess is None and loaded is None:
        preprocess = default_preprocess(module)
    images, _ = as_images(image)
    inputs = [_prepare_input(im, preprocess, loaded) for im in images]
    if device is not None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise InputError("--device cuda was asked for but no CUDA GPU is available: use --device cpu")
        module = module.to(dev)
    else:
        p = next(module.parameters(), None)
        dev = p.device if p is not None else torch.device("cpu")
    inputs = [(x.to(dev), display, image_info) for x, display, image_info in inputs]
    if batch_size is None:
        batch_size = 64 if dev.type == "cuda" else 8
    t_load = time.perf_counter()
    items = explain(module, inputs, methods, model_info=info, labels=label_list, layers=layers, target=target,
                    score=score, eigen_smooth=eigen_smooth, aug_smooth=aug_smooth, batch_size=batch_size,
                    seed=seed, output_key=output_key, trace_options={"layouts": layouts},
                    skip_non_spatial=skip_non_spatial, progress=progress)
    for _, res in items:
        res.seconds["load"] = t_load - t0
    if is_single(image, methods, target):
        return items[0][1]
    return CamSet.build(items, len(inputs), methods, is_multi_target(target))


def trace_layers(model: nn.Module | str, layers: LayerSpec = "all", *, weights: str | None = "none",
                 image: Any = DEFAULT_IMAGE) -> list[LayerRecord]:
    """The layers :func:`animate` would record (forward only), with shapes and parameter counts."""
    loaded = load_model(model, weights) if isinstance(model, str) else None
    module = loaded.module if loaded else model
    x, _, _ = _prepare_input(image, None, loaded)
    p = next(module.parameters(), None)
    if p is not None:
        x = x.to(p.device)
    with torch.no_grad():
        return run_trace(module, x, layers, gradients=False, keep_activations=False).records
