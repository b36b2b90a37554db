"""The public verbs: :func:`animate` a model on an image, then save, show or score the result."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from . import __version__
from .cams import layer_cams, upsample
from .errors import InputError
from .methods import MethodContext, get_method
from .normalise import NORMALISATIONS, normalise
from .render import FrameStyle, render_frames
from .sources import (
    DEFAULT_IMAGE,
    DEFAULT_MODEL,
    LoadedModel,
    Preprocess,
    load_image,
    load_model,
    resolve_target,
)
from .trace import LayerRecord, LayerSpec, run_trace
from .video import write_gif, write_mp4

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
    saved_dir: Path | None = None

    def _repr_html_(self) -> str:
        """The report's viewer inline in Jupyter (saves frames to a temporary run folder if needed)."""
        from .report import report_html

        if self.saved_dir is None or not (self.saved_dir / "manifest.json").is_file():
            self.save(Path(tempfile.mkdtemp(prefix="camanim-")) / "run", video=False, report=False)
        return report_html(self.saved_dir, inline=True)

    def show(self) -> Any:
        """Display the viewer in a notebook (returns an ``IPython.display.HTML``)."""
        try:
            from IPython.display import HTML, display
        except ImportError as exc:
            raise RuntimeError("show() needs IPython (a Jupyter notebook); use save() and open report.html") from exc
        html = HTML(self._repr_html_())
        display(html)
        return html

    def normalised(self, kind: str = "local") -> torch.Tensor:
        """CAMs scaled to [0, 1], ``local`` (per layer) or ``global`` (one scale for the network)."""
        return normalise(self.cams, kind)

    def frames(self, kind: str = "local", style: FrameStyle = FrameStyle(),
               progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Rendered frames (L, H, W, 3) uint8 for one normalisation."""
        return render_frames(self.image, self.normalised(kind), self.layers, kind, style, progress=progress)

    def manifest(self) -> dict[str, Any]:
        return {
            "model": self.model_info,
            "image": {**self.image_info, "size": [int(self.cams.shape[-2]), int(self.cams.shape[-1])]},
            "method": self.method,
            "target": self.target.to_dict(),
            "versions": {"camanim": __version__, "torch": torch.__version__},
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
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
        written: dict[str, Path] = {}
        t0 = time.perf_counter()
        names = np.array([r.name for r in self.layers])
        np.savez(tmp / "cams.npz", cams=self.cams.detach().float().cpu().numpy(), names=names,
                 input=self.input_tensor.detach().float().cpu().numpy(), image=self.image,
                 target=np.array(self.target.index))
        written["cams"] = tmp / "cams.npz"
        frames: dict[str, np.ndarray] = {}
        total = len(self.layers)
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = []
            for n in norms:
                cb = (lambda d, t, n=n: progress(f"frames {n}", d, t)) if progress else None
                frames[n] = self.frames(n, style, progress=cb)
                folder = tmp / "frames" / n
                folder.mkdir(parents=True)
                # PNG encoding releases the GIL: two threads keep both cores busy.
                futures += [pool.submit(_save_png, frames[n][i], folder / f"{i:04d}.png") for i in range(total)]
                written[f"frames_{n}"] = folder
            if video:
                jobs = [(f"camanim_{n}", frames[n]) for n in norms]
                if len(norms) == 2:
                    a, b = (frames[n] for n in norms)
                    jobs.append(("camanim_side_by_side", _SideBySide(a, b)))
                for stem, fr in jobs:
                    for fmt in formats:
                        path = tmp / f"{stem}.{fmt}"
                        if progress:
                            progress(f"encode {path.name}", 0, 1)
                        if fmt == "mp4":
                            write_mp4(path, fr, fps=fps)
                        else:
                            write_gif(path, np.asarray(list(fr)), fps=fps)
                        written[f"{stem.removeprefix('camanim_')}_{fmt}"] = path
                        if progress:
                            progress(f"encode {path.name}", 1, 1)
            for f in futures:
                f.result()
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


class _SideBySide:
    """Local | global frames joined horizontally, made one at a time while encoding."""

    def __init__(self, left: np.ndarray, right: np.ndarray) -> None:
        self.left, self.right = left, right

    def __iter__(self):
        gap = np.full((self.left.shape[1], 8, 3), 24, np.uint8)
        for a, b in zip(self.left, self.right):
            yield np.concatenate([a, gap, b], axis=1)


def _save_png(frame: np.ndarray, path: Path) -> None:
    Image.fromarray(frame).save(path, compress_level=1)


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
) -> CamResult:
    """Compute the CAM of every selected layer in one forward and one backward pass.

    Args:
        model: a model name (built-in, torchvision, timm), a :class:`LoadedModel`, or any ``nn.Module``.
        image: ``sample:NAME``, an image path, a PIL image, an array, or a ready input tensor.
        method: a registered method name (``camanim methods``) or ``pkg.module:Class``.
        layers: ``all``, ``leaves``, a glob, ``re:REGEX`` or ``type:Conv2d`` (see :func:`camanim.trace.select_layers`).
        target: class index or label; default the predicted class.
        weights: for a model name: ``default``, ``none`` or a state dict path.
        preprocess: for an ``nn.Module``: a callable PIL image -> tensor (default: ImageNet recipe).
        labels: class names for an ``nn.Module``.
        device: ``cpu``/``cuda``; default the model's device.
        seed: seeds RandomCAM's weights.

    Returns:
        A :class:`CamResult`; ``result.save(out_dir)`` writes frames, videos and the manifest.

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
    cam_method = get_method(method)
    x, display, image_info = _prepare_input(image, preprocess, loaded)
    if device is not None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise InputError("--device cuda was asked for but no CUDA GPU is available: use --device cpu")
        module = module.to(dev)
    else:
        p = next(module.parameters(), None)
        dev = p.device if p is not None else torch.device("cpu")
    x = x.to(dev)
    t_load = time.perf_counter()
    # Resolve the target before the pass: a bad label should fail before any work.
    num_classes = info.get("num_classes")
    tgt_index = None
    if target is not None:
        if num_classes is None:
            num_classes = len(label_list) if label_list else 10**9
        tgt_index = resolve_target(target, label_list, int(num_classes))
    tr = run_trace(module, x, layers, targets=None if tgt_index is None else [tgt_index],
                   gradients=cam_method.uses_gradients, output_key=output_key)
    if tgt_index is None:
        tgt_index = int(tr.targets[0])
    elif tgt_index >= tr.logits.shape[1]:
        raise InputError(f"target class {tgt_index} is out of range: the model has {tr.logits.shape[1]} classes")
    info.setdefault("num_classes", int(tr.logits.shape[1]))
    t_trace = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    ctx = MethodContext(model=module, input_tensor=x, targets=tr.targets, generator=gen, eigen_smooth=eigen_smooth)
    cb = (lambda d, t: progress("cams", d, t)) if progress else None
    per_layer = layer_cams(tr, cam_method, ctx, progress=cb)
    cams = upsample(per_layer, (x.shape[-2], x.shape[-1]), batch=x.shape[0])[:, 0]
    t_cams = time.perf_counter()
    prob = float(tr.logits.float().softmax(dim=1)[0, tgt_index])
    label = label_list[tgt_index] if label_list and tgt_index < len(label_list) else None
    return CamResult(
        cams=cams, layers=tr.records, method=cam_method.name, target=Target(tgt_index, label, prob),
        image=display, input_tensor=x.detach(), model=module, model_info=info, image_info=image_info,
        seconds={"load": t_load - t0, "trace": t_trace - t_load, "cams": t_cams - t_trace},
    )


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
