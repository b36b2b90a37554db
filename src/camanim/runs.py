"""Several images, targets and methods in one call: rows in, one :class:`CamResult` per row and method out.

:func:`explain` stacks every (image, target) row into one batch, so a single traced pass serves
all of them (see :mod:`camanim.engine`), and splits the result back per row and method.
:class:`CamSet` holds those results and saves them as a folder tree::

    OUT/manifest.json                          what is where: rows, methods, grids
    OUT/<image>/class_<k>/<method>/...         one ordinary run folder per image, target and method
    OUT/<image>/class_<k>/camanim_methods_grid.mp4   one tile per method, the same layer at a time

A level appears only when it varies: ``<image>`` with several images, ``class_<k>`` with
``--target topk:K``, ``<method>`` with several methods.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from . import __version__
from .engine import compute_cams
from .errors import InputError
from .methods import CamMethod
from .nonspatial import UnitVectors, drop_non_spatial, unit_vectors
from .targets import TargetSpec, is_multi_target, parse_target, rows_for
from .trace import LayerSpec, Trace, eval_mode, logits_of

if TYPE_CHECKING:
    from .api import CamResult

Progress = Callable[[str, int, int], None]
Prepared = tuple[torch.Tensor, np.ndarray, dict[str, Any]]

GRID_VIDEO = "camanim_methods_grid.mp4"


def as_images(image: Any) -> tuple[list[Any], bool]:
    """The images of ``image`` and whether it named several (a list, or a 4-D tensor with batch > 1)."""
    if isinstance(image, (list, tuple)):
        if not image:
            raise InputError("no image given: pass at least one image")
        return list(image), True
    if isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[0] > 1:
        return [image[i:i + 1] for i in range(image.shape[0])], True
    return [image], False


def is_single(image: Any, methods: Sequence[CamMethod], target: Any) -> bool:
    """Whether a call gives one :class:`CamResult` (one image, one method, one target per image)."""
    return not as_images(image)[1] and len(methods) == 1 and not is_multi_target(target)


def explain(
    module: nn.Module,
    inputs: Sequence[Prepared],
    methods: Sequence[CamMethod],
    *,
    model_info: dict[str, Any],
    labels: Sequence[str] | None,
    layers: LayerSpec = "all",
    target: TargetSpec | Sequence[TargetSpec] = None,
    score: str = "logit",
    eigen_smooth: bool = False,
    aug_smooth: bool = False,
    batch_size: int = 64,
    seed: int = 0,
    output_key: str | int | None = None,
    trace_options: Mapping[str, Any] | None = None,
    skip_non_spatial: bool = False,
    progress: Progress | None = None,
) -> list[tuple[tuple[int, int, str], CamResult]]:
    """CAMs of every layer for every image, target and method: ``[((image, target, method), result)]``.

    Images of one input size run as one batch (one traced pass for all of them and all their
    targets); each row keeps its own target. ``target`` is one spec for every image, or a list
    with one spec per image.
    """
    from .api import CamResult, Target

    n_images = len(inputs)
    if isinstance(target, (list, tuple)):
        if len(target) != n_images:
            raise InputError(f"{len(target)} targets for {n_images} images: give one target per image, or one for all")
        specs = [parse_target(t) for t in target]
    else:
        specs = [parse_target(target)] * n_images
    num_classes = model_info.get("num_classes") or (len(labels) if labels else None)
    # Resolve labels and indices before any pass: a bad label fails before any work.
    rows_for([s for s in specs if not _needs_logits(s)], labels, num_classes)
    options = {"methods": [m.name for m in methods], "score": score if isinstance(score, str) else "custom",
               "eigen_smooth": eigen_smooth, "aug_smooth": aug_smooth, "batch_size": batch_size,
               **({"output_key": output_key} if output_key is not None else {})}
    out: list[tuple[tuple[int, int, str], CamResult]] = []
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, (x, _, _) in enumerate(inputs):
        by_shape.setdefault(tuple(x.shape[1:]), []).append(i)
    for image_ids in by_shape.values():
        x_img = torch.cat([inputs[i][0] for i in image_ids])
        logits = None
        given = [specs[i] is not None for i in image_ids]
        if any(_needs_logits(specs[i]) for i in image_ids) or (any(given) and not all(given)):
            # topk needs the scores first; so does a mix of given and predicted targets
            with eval_mode(module), torch.inference_mode():
                logits = logits_of(module(x_img), output_key)
        per_image = rows_for([specs[i] for i in image_ids], labels, num_classes, logits)
        rows = [(k, t) for k, ts in enumerate(per_image) for t in ts]
        x_rows = x_img[[k for k, _ in rows]] if len(rows) != len(image_ids) else x_img
        tgts = None if all(t is None for _, t in rows) else [
            int(t) if t is not None else int(logits[k].argmax()) for k, t in rows]
        n_rows = len(rows)
        vectors_of: list[UnitVectors] = []

        def keep_vectors(tr: Trace, vectors_of: list[UnitVectors] = vectors_of, n: int = n_rows) -> None:
            vectors_of.extend(unit_vectors(tr, r) for r in range(n))

        t0 = time.perf_counter()
        comp = compute_cams(module, x_rows, layers, methods, targets=tgts,
                            image_index=torch.tensor([k for k, _ in rows]), score=score,
                            eigen_smooth=eigen_smooth, aug_smooth=aug_smooth, batch_size=batch_size, seed=seed,
                            output_key=output_key, trace_options=trace_options,
                            on_trace=keep_vectors, progress=progress)
        seconds = {"cams": time.perf_counter() - t0, **comp.seconds}
        model_info.setdefault("num_classes", int(comp.logits.shape[1]))
        probs = comp.logits.float().softmax(dim=1)
        records = comp.records
        if n_rows > 1:
            records = [dataclasses.replace(r, shape=(1, *r.shape[1:])) if r.shape and r.shape[0] == n_rows else r
                       for r in records]
        for r, (k, _) in enumerate(rows):
            tgt = int(comp.targets[r])
            label = labels[tgt] if labels and tgt < len(labels) else None
            vectors = vectors_of[r]
            keep = None
            recs = records
            if skip_non_spatial:
                keep, recs = drop_non_spatial(records)
                vectors = vectors.subset(keep)
            _, display, image_info = inputs[image_ids[k]]
            for m in methods:
                cams = comp.cams[m.name][:, r].contiguous()
                if keep is not None:
                    cams = cams[keep]
                res = CamResult(cams=cams, layers=list(recs), method=m.name,
                                target=Target(tgt, label, float(probs[r, tgt])), image=display, input_tensor=x_rows[r:r + 1].detach(), model=module,
                                model_info=model_info, image_info=image_info, seconds=dict(seconds),
                                vectors=vectors, options={**options, "extra_forwards": comp.forwards.get(m.name, 0),
                                                          "traced_passes": comp.forwards.get("trace", 0)})
                out.append(((image_ids[k], tgt, m.name), res))
    return _ordered(out, inputs, methods)


def _needs_logits(spec: TargetSpec) -> bool:
    return spec is not None and not isinstance(spec, (int, str))


def _ordered(out: list[tuple[tuple[int, int, str], CamResult]], inputs: Sequence[Prepared],
             methods: Sequence[CamMethod]) -> list[tuple[tuple[int, int, str], CamResult]]:
    """Results by image (input order), then target (as ranked), then method (as asked)."""
    order = {m.name: i for i, m in enumerate(methods)}
    seen: dict[tuple[int, int], int] = {}
    for (img, tgt, _), _res in out:
        seen.setdefault((img, tgt), len(seen))
    return sorted(out, key=lambda item: (item[0][0], seen[(item[0][0], item[0][1])], order[item[0][2]]))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._") or "x"


def _image_names(infos: Sequence[dict[str, Any]]) -> list[str]:
    """A folder name per image: the file's stem or the sample's name, made unique."""
    names: list[str] = []
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
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


@dataclass
class CamSet:
    """The results of one call over several images, targets or methods (a sequence of :class:`CamResult`).

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
    def build(cls, items: Sequence[tuple[tuple[int, int, str], CamResult]], n_images: int,
              methods: Sequence[CamMethod], multi_target: bool) -> CamSet:
        infos: dict[int, dict[str, Any]] = {}
        for (img, _, _), res in items:
            infos.setdefault(img, res.image_info)
        names = _image_names([infos.get(i, {}) for i in range(n_images)])
        folders = []
        for (img, tgt, name), _res in items:
            parts = ([names[img]] if n_images > 1 else []) + ([f"class_{tgt}"] if multi_target else [])
            parts += [_safe(name)] if len(methods) > 1 else []
            folders.append("/".join(parts) or ".")
        return cls([res for _, res in items], folders, [m.name for m in methods])

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[CamResult]:
        return iter(self.results)

    def __getitem__(self, i: int) -> CamResult:
        return self.results[i]

    def _repr_html_(self) -> str:
        """Every result's viewer inline in Jupyter, each folded under its folder, method and target (the first open)."""
        parts = []
        for i, (folder, res) in enumerate(zip(self.folders, self.results)):
            t = res.target
            target = f"{t.label} (#{t.index}, p={t.score:.3f})" if t.label else f"class #{t.index} (p={t.score:.3f})"
            summary = f"<code>{html.escape(folder)}</code> · {html.escape(res.method)} · {html.escape(target)}"
            parts.append(f"<details{' open' if i == 0 else ''}><summary>{summary}</summary>{res._repr_html_()}</details>")
        return "".join(parts)

    def show(self) -> None:
        """Display every result's viewer in a notebook (see :meth:`CamResult.show`)."""
        from .api import display_html

        display_html(self._repr_html_())

    def by_folder(self) -> dict[str, CamResult]:
        return dict(zip(self.folders, self.results))

    def groups(self) -> dict[str, list[int]]:
        """Folder of each (image, target) -> the indices of its results (one per method)."""
        out: dict[str, list[int]] = {}
        for i, folder in enumerate(self.folders):
            parent = folder.rsplit("/", 1)[0] if len(self.methods) > 1 and "/" in folder else (
                "." if len(self.methods) > 1 else folder)
            out.setdefault(parent, []).append(i)
        return out

    def manifest(self) -> dict[str, Any]:
        first = self.results[0]
        grids = [f"{g}/{GRID_VIDEO}".removeprefix("./") for g in self.groups()] if len(self.methods) > 1 else []
        return {
            "kind": "set",
            "model": first.model_info,
            "methods": self.methods,
            "options": first.options,
            "versions": {"camanim": __version__, "torch": torch.__version__},
            "runs": [{"folder": f, "image": r.image_info, "target": r.target.to_dict(), "method": r.method}
                     for f, r in zip(self.folders, self.results)],
            "grids": grids,
        }

    def save(self, out_dir: str | Path, *, progress: Progress | None = None, **options: Any) -> dict[str, Path]:
        """Write every result's run folder, one methods grid video per (image, target), and a top manifest.

        ``options`` go to each :meth:`CamResult.save` (``normalisations``, ``fps``, ``formats``, ``video``,
        ``style``, ...). The tree is written beside ``out_dir`` and moved into place when complete.
        """
        from .api import prepare_out_dir, replace_dir

        out = Path(out_dir)
        parent = prepare_out_dir(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
        tmp.chmod(0o755)
        written: dict[str, Path] = {}
        try:
            for folder, res in zip(self.folders, self.results):
                res.save(tmp / folder, progress=progress, **options)
                written[folder] = out / folder
            if len(self.methods) > 1 and options.get("video", True):
                fps = max(1, int(round(float(options.get("fps", 10)))))
                for group, idx in self.groups().items():
                    _methods_grid([tmp / self.folders[i] for i in idx], tmp / group, fps)
                    written[f"{group}/{GRID_VIDEO}".removeprefix("./")] = out / group / GRID_VIDEO
            (tmp / "manifest.json").write_text(json.dumps(self.manifest(), indent=2))
            written["manifest"] = out / "manifest.json"
            replace_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for res, folder in zip(self.results, self.folders):
            res.saved_dir = out / folder
        return written


def _methods_grid(run_dirs: Sequence[Path], out: Path, fps: int) -> Path:
    """``camanim_methods_grid.mp4`` (and ``compare.html``): the runs' local frames side by side, labelled."""
    from .report import compare

    paths = compare(run_dirs, out, fps=fps)
    return paths["video"].rename(out / GRID_VIDEO)
