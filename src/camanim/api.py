"""The public verbs: :func:`animate` a model on an image, :func:`ybroad` a result, :func:`road_for_run`
a finished run folder, :func:`trace_layers` a model.

Each verb resolves its inputs (model, images, methods, device), builds its options object once
(:class:`~camanim.compute.CamOptions`, :class:`~camanim.road.RoadOptions`) and calls down.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .compute import (
    CamOptions,
    SimilarityTarget,
    drop_non_spatial,
    explain,
    is_multi_target,
    parse_target,
    written_as,
)
from .draw import montage_for
from .errors import InputError, model_errors
from .methods import get_methods
from .metrics import MetricOptions, layer_metrics, with_road, write_agreement
from .report import write_report
from .results import CamResult, CamSet
from .road import DEFAULT_TRIALS, RoadOptions, YbRoad, YbRoadAcross, write_ybroad, ybroad_across
from .road import ybroad as road_ybroad
from .rundir import load_run, read_run_cams, with_ybroad, write_manifest
from .settings import options_or_keywords
from .sources import (
    DEFAULT_IMAGE,
    DEFAULT_MODEL,
    LoadedModel,
    Preprocess,
    as_images,
    as_volumes,
    default_preprocess,
    detector_at,
    for_model,
    load_model,
    prepare_input,
    prepare_volume,
    takes_volumes,
    with_input_size,
)
from .trace import LayerRecord, LayerSpec, run_trace, select_layers, split_distinct

Progress = Callable[[str, int, int], None]


def _resolve_model(model: nn.Module | str | LoadedModel, weights: str | Path | None
                   ) -> tuple[nn.Module, dict[str, Any], list[str] | None, LoadedModel | None]:
    """(module, provenance, labels, the LoadedModel if there is one) of a name, LoadedModel or module."""
    loaded: LoadedModel | None = None
    if isinstance(model, str):
        loaded = load_model(model, weights)
    elif isinstance(model, LoadedModel):
        loaded = model
    if loaded is not None:
        return loaded.module, dict(loaded.info), loaded.labels, loaded
    if isinstance(model, nn.Module):
        return model, {"name": type(model).__name__, "weights": "user module"}, None, None
    raise TypeError(f"model must be a name, a LoadedModel or an nn.Module, not {type(model).__name__}")


def _device_for(module: nn.Module, device: str | torch.device | None) -> tuple[nn.Module, torch.device]:
    """The module on ``device`` (default: where its parameters are) and that device.

    Raises:
        InputError: CUDA asked for without a CUDA GPU.
    """
    if device is None:
        p = next(module.parameters(), None)
        return module, p.device if p is not None else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA GPU is available: use --device cpu")
    return module.to(dev), dev


#: what a model that fails on its input can be given instead (CLI flags and Python keywords)
FORWARD_HINT = ("if the model takes another input size or channel count, give it: --input-size H,W "
                "(input_size=) or --channels N, or a tensor of the right shape")


def check_layers(module: nn.Module, layers: LayerSpec, info: Mapping[str, Any]) -> None:
    """Check that ``layers`` selects a layer of ``module`` before any pass; else say whose names it has.

    Raises:
        InputError: nothing is selected; the line names the library the model came from and a few of
            its real layer names.
    """
    try:
        select_layers(module, layers)
    except InputError as exc:
        if "matches no layer" not in str(exc):
            raise
        names = [n for n, _ in module.named_modules() if n and n.count(".") <= 1]
        if not names:
            raise InputError(f"the model ({type(module).__name__}) has no submodules, and camanim records the "
                             "outputs of submodules: wrap its operations in nn.Module layers (nn.Conv2d, ...) "
                             "or pass the model they belong to") from None
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        arch = str(info.get("architecture") or info.get("name") or type(module).__name__)
        source, _, bare = arch.partition(":")
        whose = f"{source}'s {bare}" if bare else arch
        raise InputError(f"layer pattern '{layers}' matches no layer of {whose}, whose layers are named like "
                         f"{shown}: see 'camanim layers --model {info.get('name', bare or arch)}'") from None


def _preprocess_for(module: nn.Module, loaded: LoadedModel | None, preprocess: Callable | None,
                    input_size: tuple[int, int] | int | None) -> Callable | None:
    """The preprocessing of this call: the given one, the loaded model's, or ImageNet's, at ``input_size``.

    Raises:
        InputError: ``input_size`` beside a user transform (its size is the transform's).
    """
    if input_size is None:
        return preprocess if preprocess is not None or loaded is not None else default_preprocess(module)
    if preprocess is not None and not isinstance(preprocess, Preprocess):
        raise InputError("input_size= with your own preprocess transform: set the size in the transform")
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(size) != 2:
        raise InputError(f"input_size={input_size!r}: give (height, width) or one size for both")
    base = preprocess if preprocess is not None else (loaded.preprocess if loaded else default_preprocess(module))
    return with_input_size(base, size)


def animate(
    model: nn.Module | str | LoadedModel = DEFAULT_MODEL,
    image: Any = DEFAULT_IMAGE,
    *,
    method: str | Sequence[str] = "gradcam",
    layers: LayerSpec = "all",
    target: int | str | None = None,
    weights: str | Path | None = "default",
    preprocess: Callable | None = None,
    labels: Sequence[str] | None = None,
    device: str | torch.device | None = None,
    eigen_smooth: bool = False,
    seed: int = 0,
    output_key: str | int | None = None,
    progress: Progress | bool | None = None,
    layouts: Mapping[str, str] | None = None,
    skip_non_spatial: bool = False,
    score: str = "logit",
    aug_smooth: bool = False,
    batch_size: int | None = None,
    options: CamOptions | None = None,
    input_size: tuple[int, int] | int | None = None,
    window: str | tuple[float, float] | None = None,
    frame: int | None = None,
    guided: bool = False,
) -> CamResult | CamSet:
    """Compute the CAM of every selected layer in one forward and one backward pass (CAManim).

    Source: CAManim (https://arxiv.org/abs/2312.11772): a CAM at every layer of the network,
    rendered as the frames of a video with local and global normalisation.

    Args:
        model: a model name (built-in, torchvision, timm), a :class:`LoadedModel`, or any ``nn.Module``.
        image: ``sample:NAME``, an image path, a PIL image, an (H, W, 3) array, or a ready input tensor
            (C, H, W) / (1, C, H, W); a list of them (or a (B, C, H, W) batch) explains each image, in
            one batched pass, with its own target. For a 3-D model (``Conv3d``, no ``Conv2d``): a NIfTI
            file (``.nii``, ``.nii.gz``), a DICOM series folder, or a tensor (C, D, H, W) /
            (B, C, D, H, W); a 5-D tensor, a ``.nii`` file or a folder is a volume for any model. The input goes to the model's device and dtype
            (a float16/bfloat16 model gets a half input; CAMs are float32); other ranks are refused.
        method: a registered method name (``camanim methods``), ``pkg.module:Class``/``file.py:Class``
            (a plugin), or several, ``"gradcam,hirescam,scorecam"`` or a list: they share the pass.
        layers: ``all``, ``leaves``, a glob, ``re:REGEX`` or ``type:Conv2d`` (see :func:`camanim.select_layers`).
        target: class index or label (default: each image's predicted class), ``"topk:K"`` (each
            image's K top classes, one result each), or a list with one target per image; or a target
            on the model's output, explained by its value: a callable ``fn(output) -> (B,)`` (or
            :class:`camanim.OutputTarget` to name it), ``"seg:CLASS[,mask=PATH]"``
            (:class:`camanim.SegmentationTarget`), ``"similar:IMAGE"`` (:class:`camanim.SimilarityTarget`),
            ``"box:N"`` (:class:`camanim.BoxTarget`); see README, "Tasks".
        weights: for a model name: ``default``, ``none`` or a state dict path.
        preprocess: for an ``nn.Module``: a callable PIL image -> (C, H, W) tensor (default: ImageNet recipe);
            for a volume file, a callable (1, D, H, W) float32 tensor -> (C, D, H, W) (default: the
            stored intensities, e.g. Hounsfield units).
        labels: class names for an ``nn.Module``.
        device: ``cpu``/``cuda``; default the model's device.
        eigen_smooth: first principal component of the weighted maps (methods that support it).
        seed: seeds every random draw of the methods: RandomCAM's weights, SS-CAM's and SmoothGradCAM++'s noise.
        output_key: where the logits are in a tuple/dict/dataclass model output (an index or a key).
        progress: called as ``progress(stage, done, total)``; ``True``: one ``tqdm.auto`` bar per stage
            (a widget in Jupyter, text on a terminal).
        layouts: ``{layer name: layout}`` overriding layout detection, e.g. ``{"encoder.ln": "TOKENS"}``
            (see :mod:`camanim.trace.layouts`).
        skip_non_spatial: leave out layers without a 2-D map (pooling, flatten, Linear) instead of
            drawing their 1-D evidence as a stripe.
        score: what is explained: the target's ``logit``, its ``softmax`` probability, or its ``sigmoid``
            probability (multi-label models: each class on its own). A model with one output logit z
            has two classes, 1 (logit z) and 0 (logit -z), and its probability is always sigmoid(z).
            ``result.options["probability"]`` (and the manifest) says which probability was used.
        aug_smooth: test-time augmentation (flip x [0.9, 1, 1.1]) per layer, as pytorch-grad-cam's.
        batch_size: images per extra forward of ScoreCAM/AblationCAM (packed across channels and layers);
            default 8 on the CPU (fastest per image on a laptop-class CPU), 64 on a GPU.
        options: all of ``layers`` ... ``batch_size`` at once (the CLI builds one); then those
            keywords must be left at their defaults.
        input_size: (height, width) (or one int) the model takes, for a model whose size camanim cannot
            know: images are resized and cropped to it (not a ready tensor).
        window: for DICOM images: ``(centre, width)`` (or ``"C,W"``) in the rescaled unit (Hounsfield
            units for CT) instead of the file's window (default: the file's first window, else the
            values' range). Windowing comes before the model's normalisation.
        frame: for a multi-frame DICOM file: the frame to explain, from 0 (default 0).
        guided: Guided Grad-CAM frames: each (image, target)'s guided backpropagation is computed once
            (``result.guided``, (C, H, W); pytorch-grad-cam's ``GuidedBackpropReLUModel``) and each
            layer's normalised CAM multiplies it (``deprocess_image(cam * gb)``). The CAMs are unchanged.

    Returns:
        A :class:`CamResult` with raw CAMs (L, H, W) at input size; ``result.save(out_dir)`` writes
        frames, videos and the manifest. With several images, methods or ``topk`` targets, a
        :class:`CamSet` of them, whose ``save(out_dir)`` writes one run folder each
        (``OUT/<image>/class_<k>/<method>/``) and a ``camanim_methods_grid.mp4`` per image and target.

    Raises:
        InputError: an unknown model, method, image, layer pattern, label or layout; a class out of
            range; a target on the model's output that does not fit it (a callable returning another
            shape or non-finite values, a segmentation class out of range or an empty mask, a detection
            that is not there); a bad DICOM file, window or frame (or either given for an image that is not DICOM); CUDA without a GPU; a model output without (batch, classes) logits; an input tensor
            that is not (C, H, W) or (B, C, H, W) floating point; an error the model's own forward
            raises on the input (one line: the model, the input shape and its message).
        TypeError: ``model`` is not a name, a LoadedModel or an nn.Module; ``options`` is not a
            CamOptions, or is given beside a keyword set to something else than its default.

    Example:
        >>> result = camanim.animate("resnet18", "sample:cat", weights="none", layers="layer*")
        >>> result.save("out")
    """
    # gradients are needed even when called under torch.inference_mode() (serving code, Lightning's predict)
    with torch.inference_mode(False):
        return _animate(model, image, method, weights, preprocess, labels, device, progress_bars(progress), input_size,
                        {"window": window, "frame": frame},
                        options_or_keywords(options, CamOptions, dict(
                            layers=layers, target=target, score=score, eigen_smooth=eigen_smooth,
                            aug_smooth=aug_smooth, batch_size=batch_size, seed=seed, output_key=output_key,
                            layouts=layouts, skip_non_spatial=skip_non_spatial, guided=guided)))


def _animate(model: nn.Module | str | LoadedModel, image: Any, method: str | Sequence[str],
             weights: str | Path | None, preprocess: Callable | None, labels: Sequence[str] | None,
             device: str | torch.device | None, progress: Progress | None,
             input_size: tuple[int, int] | int | None, reading: dict[str, Any], opts: CamOptions
             ) -> CamResult | CamSet:
    t0 = time.perf_counter()
    module, info, label_list, loaded = _resolve_model(model, weights)
    if labels is not None:
        label_list = list(labels)
    methods = get_methods(method)
    volume = takes_volumes(module, image)
    if volume:
        if input_size is not None:
            raise InputError("input_size= (--input-size) resizes 2-D images: give the volume at the size the model takes")
        if any(v is not None for v in reading.values()):
            raise InputError("window= and frame= (--window, --frame) read one 2-D DICOM image: a volume is given to a "
                             "3-D model in its own values; drop them")
        if opts.guided:
            raise InputError("guided=True (--guided) draws Guided Grad-CAM frames of 2-D images: for a volume leave "
                             "it out")
        images, several = as_volumes(image)
        prepared = [prepare_volume(im, preprocess) for im in images]
    else:
        preprocess = _preprocess_for(module, loaded, preprocess, input_size)
        if input_size is not None and isinstance(model, str):  # a detector built here takes that size too
            detector_at(module, tuple(preprocess.crop))
        images, several = as_images(image)
        prepared = [prepare_input(im, preprocess, loaded, **reading) for im in images]
    check_layers(module, opts.layers, info)
    module, dev = _device_for(module, device)
    opts = opts.for_device(dev.type)
    if not volume:
        opts = _with_references(opts, lambda im: for_model(prepare_input(im, preprocess, loaded)[0], module, dev))
    inputs = [for_model(x, module, dev) for x, _, _ in prepared]
    t_load = time.perf_counter()
    with model_errors(str(info.get("name")), tuple(inputs[0].shape), FORWARD_HINT):
        rows = explain(module, inputs, methods, opts, labels=label_list,
                       num_classes=info.get("num_classes") or (len(label_list) if label_list else None),
                       progress=progress)
    if rows and rows[0].kind == "class":
        info.setdefault("num_classes", rows[0].num_classes)
    if volume:
        montages = [montage_for(int(x.shape[2])) for x, _, _ in prepared]
        shown = [(m.image(disp), {**meta, "montage": m.to_dict()}) for m, (_, disp, meta) in zip(montages, prepared)]
        results = [CamResult.from_row(row, *shown[row.image], module, info, montage=montages[row.image])
                   for row in rows]
    else:
        results = [CamResult.from_row(row, prepared[row.image][1], prepared[row.image][2], module, info)
                   for row in rows]
    for res in results:
        res.seconds["load"] = t_load - t0
    if not several and len(methods) == 1 and not is_multi_target(opts.target):
        return results[0]
    return CamSet.build(results, [row.image for row in rows], len(prepared), [m.name for m in methods],
                        is_multi_target(opts.target))


def _with_references(opts: CamOptions, read: Callable[[Any], torch.Tensor]) -> CamOptions:
    """``opts`` with each similarity target's reference image read as the model's input (``read``)."""

    def resolved(spec: Any) -> Any:
        spec = parse_target(spec)
        if isinstance(spec, SimilarityTarget) and spec.input is None:
            try:
                return dataclasses.replace(spec, input=read(spec.reference))
            except InputError as exc:  # say which image: the reference, not the one explained
                raise InputError(f"{written_as(spec)}: the reference: {exc}") from exc
        return spec

    target = opts.target
    if isinstance(target, (list, tuple)):
        return dataclasses.replace(opts, target=tuple(resolved(t) for t in target))
    return dataclasses.replace(opts, target=resolved(target)) if target is not None else opts


def trace_layers(model: nn.Module | str | LoadedModel, layers: LayerSpec = "all", *, weights: str | None = "none",
                 image: Any = DEFAULT_IMAGE, layouts: Mapping[str, str] | None = None) -> list[LayerRecord]:
    """The layers :func:`animate` would record (one forward, no gradients), with shapes and parameter counts;
    with ``distinct`` in ``layers``, those it keeps (one per distinct CAM), numbered as the run numbers them.

    Raises:
        InputError: an unknown model or image, a layer pattern that selects nothing, a bad layout, or
            an error the model's own forward raises on the input.
    """
    loaded = load_model(model, weights) if isinstance(model, str) else model if isinstance(model, LoadedModel) else None
    module = loaded.module if loaded else model
    info = loaded.info if loaded else {"name": type(module).__name__}
    if takes_volumes(module, image):
        x = prepare_volume(image)[0]
    else:
        x, _, _ = prepare_input(image, None if loaded else default_preprocess(module), loaded)
    check_layers(module, layers, info)
    p = next(module.parameters(), None)
    x = for_model(x, module, p.device if p is not None else torch.device("cpu"))
    with torch.no_grad(), model_errors(str(info.get("name")), tuple(x.shape), FORWARD_HINT):
        # activations kept: only then is it known which layers hand on another's output (same_as)
        records = run_trace(module, x, layers, gradients=False, keep_activations=True, layouts=layouts,
                            read_output=False).records  # any output: a segmentation or detection model's too
    if split_distinct(layers)[1]:
        return drop_non_spatial(records, spatial=False, distinct=True)[1]
    return records


def _score_one(result: CamResult, opts: RoadOptions, progress: Callable[[int, int], None] | None) -> YbRoad:
    if result.model is None:
        raise ValueError("this result has no model attached: pass the model to camanim.road.ybroad directly")
    x = result.input_tensor
    target = result.target.head if result.target.kind == "value" else result.target.index
    yb = road_ybroad(result.model, x, result.lazy_cams.stack().to(x.device), target,
                     layers=[r.to_dict() for r in result.layers],
                     output_key=result.options.get("output_key"), progress=progress, options=opts,
                     probability=result.options.get("probability", "softmax"))
    result.road = yb
    return yb


def _same_settings(yb: YbRoad, opts: RoadOptions) -> bool:
    return (tuple(yb.percentiles), yb.score, yb.noise, yb.seed, yb.trials) == (
        tuple(opts.percentiles), opts.score, opts.noise, opts.seed, opts.trials)


def progress_bars(progress: Progress | bool | None) -> Progress | None:
    """``progress`` as a callback: ``True`` gives ``tqdm.auto`` bars, one per stage (notebook widgets in
    Jupyter, text bars on stderr elsewhere; units: frames, perturbed images, files, steps); a callable
    is kept; ``False``/None: none."""
    if progress is None or progress is False:
        return None
    if progress is not True:
        return progress
    from tqdm.auto import tqdm

    units = {"frames": "frame", "ybROAD": "image", "encode": "file", "report": "file"}
    bars: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit=units.get(stage.split(" ", 1)[0], "step"),
                                     leave=False)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def ybroad(result: CamResult | CamSet | Sequence[CamResult], *, percentiles: Sequence[float] = (20, 40, 60, 80),
           score: str = "prob", noise: float = 0.01, seed: int = 0, trials: int = DEFAULT_TRIALS,
           batch_size: int | None = None, options: RoadOptions | None = None,
           progress: Callable[[int, int], None] | bool | None = None) -> YbRoad | YbRoadAcross:
    """ybROAD of an :func:`animate` result: the ROAD score of every layer's CAM; or, over several results
    (images) of one model, method and set of layers, the per-layer mean with a confidence interval across
    images and the best layer across them.

    Source: ROAD (Rong et al., 2022, https://arxiv.org/abs/2202.00449), per layer as in CAManim
    (https://arxiv.org/abs/2312.11772). Percentages are pixels *removed*; the score is the change of
    the target's probability, the one the result used (softmax, or sigmoid for ``score="sigmoid"``
    and one-logit models), or of its logit (``score="logit"``). See :mod:`camanim.road`.

    One result: its score is also kept on ``result.road``, so ``result.save()`` writes
    ``ybroad.csv/json/png`` and the report shows the curve, in the one save. Several results (a list
    or a :class:`CamSet`): each is scored (a result already scored with these settings is reused) and
    kept on its ``road``; the returned :class:`camanim.road.YbRoadAcross` gives ``mean``, ``ci``
    (95%, Student t over the images), ``best`` and ``verdict()``.

    Args:
        result: a :class:`CamResult` with its model attached, or several (a list or a CamSet) of the
            same model, method and layers.
        percentiles, score, noise, seed, trials, batch_size: see :class:`camanim.road.RoadOptions`;
            ``options`` gives them all at once instead.
        progress: called as ``progress(done, total)`` perturbed images (per result); ``True``: a
            ``tqdm.auto`` bar.

    Returns:
        A :class:`camanim.road.YbRoad` over the result's L layers, or a
        :class:`camanim.road.YbRoadAcross` for several results.

    Raises:
        InputError: a setting out of range; results of different models, methods or layers; no result.
        TypeError: ``result`` is not a CamResult or a sequence of them, or ``options`` is given beside a
            keyword set to something else than its default.
        ValueError: a result has no model attached.
    """
    opts = options_or_keywords(options, RoadOptions, dict(percentiles=percentiles, score=score, noise=noise,
                                                          seed=seed, trials=trials, batch_size=batch_size))
    if progress is True:
        bars = progress_bars(True)
        progress = (lambda done, total: bars("ybROAD", done, total)) if bars else None
    elif progress is False:
        progress = None
    if isinstance(result, CamResult):
        return _score_one(result, opts, progress)
    items = list(result.results) if isinstance(result, CamSet) else list(result) if isinstance(result, Sequence) \
        else None
    if items is None or not all(isinstance(r, CamResult) for r in items):
        raise TypeError(f"ybroad scores a CamResult, a CamSet or a list of CamResults, not {type(result).__name__}")
    if not items:
        raise InputError("ybroad got no results: pass one or more CamResults of the same model")
    first = items[0]
    for k, r in enumerate(items[1:], start=1):
        if r.method != first.method:
            raise InputError(f"result {k} uses method {r.method}, result 0 {first.method}: ybROAD across images "
                             "compares one method; score each method's results separately")
        if r.model_info.get("name") != first.model_info.get("name") or (
                r.model is not None and first.model is not None and r.model is not first.model):
            raise InputError(f"result {k} comes from another model than result 0: ybROAD across images needs one "
                             "model; score each model's results separately")
        if [x.name for x in r.layers] != [x.name for x in first.layers]:
            raise InputError(f"result {k} has other layers than result 0: animate every image with the same --layers")
    for k, r in enumerate(items):
        for j in range(k):
            other = items[j].input_tensor
            if r.input_tensor is other or (r.input_tensor.shape == other.shape and torch.equal(r.input_tensor, other)):
                raise InputError(f"results {j} and {k} explain the same image (targets {items[j].target.index} and "
                                 f"{r.target.index}): ybROAD across images needs one result per image; score each "
                                 "target's result on its own")
    scored = [r.road if r.road is not None and _same_settings(r.road, opts) else _score_one(r, opts, progress)
              for r in items]
    names = [str(r.image_info.get("source", f"image {i}")) for i, r in enumerate(items)]
    return ybroad_across(scored, names)


#: the one line the metrics give for a volume (1, C, D, H, W): their perturbations and scoring are 2-D only
METRICS_VOLUME_REFUSAL = ("the faithfulness metrics (--metric, camanim.score_metrics) score 2-D images only: their "
                          "perturbed inputs and CAM-weighted images are built in the image plane; for a volume "
                          "leave out --metric (ybROAD, --road, is 2-D only too)")

#: the one line the metrics give for a target on the model's output (``{label!r}``: the target as written)
METRICS_VALUE_REFUSAL = ("metrics score a class's probability or logit, and this result explains a target on the "
                         "model's output ({label!r}): score it with ybROAD (--road, camanim.ybroad)")


def score_metrics(result: CamResult | CamSet | Sequence[CamResult], *, metrics: Sequence[str] | str = "all",
                  score: str = "prob", steps: int = 20, trials: int = 5, seed: int = 0, batch_size: int = 32,
                  options: MetricOptions | None = None) -> dict[str, Any] | list[dict[str, Any]]:
    """The faithfulness metrics beside ybROAD of every layer of an :func:`animate` result.

    Deletion and Insertion AUC (torchcam's ``DeletionInsertionMetric``), Average Drop and Increase in
    Confidence (torchcam's ``ClassificationMetric``) and the CAM-times-image confidence change
    (pytorch-grad-cam's ``CamMultImageConfidenceChange``), each a value per layer (see
    :mod:`camanim.metrics`). The curves are kept on ``result.metrics``, so ``result.save()`` writes
    ``metric_<name>.csv/json/png``, ``metrics_agreement.json/csv`` (each metric's best layer and the
    Spearman correlations, ybROAD's included when it was scored) and the report's table.

    Args:
        result: a :class:`CamResult` with its model attached, or several (a list or a CamSet).
        metrics: names from ``deletion, insertion, avgdrop, increase, cammult`` (a list or a comma-separated
            string), or ``"all"``; ``road`` is :func:`ybroad`'s and is left out here.
        score, steps, trials, seed, batch_size: see :class:`camanim.metrics.MetricOptions`; ``options`` gives
            them all at once instead.

    Returns:
        The agreement table of the result (:meth:`CamResult.metrics_table`), or one per result.

    Raises:
        InputError: an unknown metric, ``road`` alone, or a setting out of range, a result explaining a target on the model's
            output (``seg:``, ``box:``, ``similar:``, a callable): only ybROAD scores those, or a volume's result.
        ValueError: a result has no model attached.
    """
    from .metrics import EXTRA, parse_metrics

    names_ = parse_metrics(metrics if isinstance(metrics, str) else ",".join(metrics))
    if not any(m in EXTRA for m in names_):  # "road" alone: nothing for this function to score, said so
        raise InputError(f"score_metrics(metrics={metrics!r}) names no metric beside ybROAD: road is scored by "
                         f"camanim.ybroad(result); give one of {', '.join(EXTRA)} or 'all'")
    opts = options_or_keywords(options, MetricOptions, dict(
        metrics=tuple(m for m in names_ if m in EXTRA), score=score, steps=steps, trials=trials, seed=seed,
        batch_size=batch_size))
    items = [result] if isinstance(result, CamResult) else list(result.results) if isinstance(result, CamSet) \
        else list(result)
    tables = []
    for r in items:
        if r.target.kind == "value":
            raise InputError(METRICS_VALUE_REFUSAL.format(label=r.target.label))
        if r.input_tensor.ndim == 5:
            raise InputError(METRICS_VOLUME_REFUSAL)
        if r.model is None:
            raise ValueError("this result has no model attached: metrics need the model to score perturbed images")
        x = r.input_tensor
        cams = r.lazy_cams.maps if r.lazy_cams.maps is not None else r.lazy_cams.stack()  # layer resolution
        r.metrics = layer_metrics(r.model, x, cams, r.target.index, [rec.name for rec in r.layers],
                                  non_spatial=[rec.non_spatial for rec in r.layers],
                                  same_as=[rec.same_as for rec in r.layers], options=opts,
                                  probability=r.options.get("probability", "softmax"),
                                  output_key=r.options.get("output_key"))
        tables.append(r.metrics_table())
    return tables[0] if isinstance(result, CamResult) else tables


def _rebuild_model(manifest: dict[str, Any], trust_checkpoint: bool) -> nn.Module:
    spec = manifest.get("model", {}).get("spec")
    if not spec:
        raise InputError("this run's model was a Python nn.Module, not a name: score it with "
                         "camanim.ybroad(result) in Python")
    return load_model(spec["name"], spec["weights"], num_classes=spec.get("num_classes"),
                      channels=spec.get("channels"), trust_checkpoint=trust_checkpoint).module


def road_for_run(out_dir: str | Path, *, model: nn.Module | None = None, trust_checkpoint: bool = False,
                 device: str | torch.device | None = None, options: RoadOptions | None = None,
                 progress: Callable[[int, int], None] | None = None, **keywords: Any
                 ) -> tuple[YbRoad, dict[str, Path]]:
    """Score a finished run folder with ybROAD and link the results from its manifest and report.

    The CAMs and the model input come from ``cams.npz`` (never recomputed); the model is rebuilt
    from the manifest unless given. Each file is replaced atomically. A run scored with ``--metric``
    gets its agreement between metrics (``metrics_agreement.*``, the manifest's ``metrics``) recomputed
    from the new ybROAD and the other metrics' saved values.

    Args:
        out_dir: a run folder (holds ``manifest.json`` and ``cams.npz``).
        model: the run's model; default: rebuilt from the manifest's ``model.spec``.
        trust_checkpoint: allow rebuilding a pickled full model (unpickling runs its code).
        device: where to score; default the model's device.
        options: :class:`camanim.road.RoadOptions`, or its fields as ``keywords``.
        progress: called as ``progress(done, total)`` perturbed images.

    Returns:
        ``(ybroad, {"csv", "json", "png", "report": path})``, and ``metrics_agreement_json``/``_csv``
        where the agreement was rewritten.

    Raises:
        InputError: not a run folder, a run of a Python module (no model spec), or a bad setting.
    """
    out = Path(out_dir)
    opts = options_or_keywords(options, RoadOptions, keywords)
    # the whole run is checked before anything is scored or written: a run the report cannot be
    # rebuilt from (no manifest, a frame missing) fails here, with nothing changed
    run = load_run(out)
    manifest = run.manifest
    target_info = manifest.get("target") if isinstance(manifest.get("target"), dict) else {}
    if target_info.get("kind") == "value":
        raise InputError(f"'{out}' explains a target on the model's output ({target_info.get('label')}): score it "
                         "in the run that computes it (camanim run --road, or camanim.ybroad(result) in Python)")
    layers = manifest["layers"]
    saved = read_run_cams(out, manifest)
    mod = model if model is not None else _rebuild_model(manifest, trust_checkpoint)
    mod, dev = _device_for(mod, device)
    yb = road_ybroad(mod, torch.from_numpy(saved.input).to(dev), torch.from_numpy(saved.cams).to(dev), saved.target,
                     layers=layers, output_key=manifest.get("options", {}).get("output_key"), progress=progress, options=opts,
                     probability=manifest.get("options", {}).get("probability", "softmax"))
    paths = write_ybroad(out, yb)
    if isinstance(manifest.get("metrics"), dict) and manifest["metrics"].get("agreement"):
        # the agreement between metrics holds ybROAD's curve too: recomputed, so nothing keeps the old one
        manifest["metrics"] = with_road(manifest["metrics"], yb)
        paths.update({f"metrics_agreement_{k}": v
                      for k, v in write_agreement(out, manifest["metrics"]["agreement"]).items()})
    write_manifest(out, with_ybroad(manifest, yb.summary()))
    # the run as loaded above, with its new scores: the folder is not read again
    paths["report"] = write_report(dataclasses.replace(run, ybroad=yb.to_json_dict()))
    return yb, paths
