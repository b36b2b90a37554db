"""The CAM method interface and its one registry.

A method turns one layer's activations A (B, C, h, w) and gradients dS/dA into a raw map
(B, h, w) before ReLU. Most methods only define channel weights alpha (B, C); the map is then
``sum_k alpha_k A_k`` (the paper's Eq. 1), or with ``eigen_smooth`` the first principal component
of the weighted maps ``alpha_k A_k``. Adding a method is one small class with ``@register_method``
or one function with ``@cam_method``.

Methods that need more than the recorded tensors (ScoreCAM's and AblationCAM's extra forwards,
ShapleyCAM's second-order pass) override :meth:`CamMethod.cam_batch`, which receives every layer
of the run at once (so extra passes can be batched across channels *and* layers), and read the
model, input and targets from the :class:`MethodContext`.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..errors import InputError
from ..trace import LayerRecord

#: ``score(logits (B, K), targets (B,)) -> (B,)``: what a CAM explains (differentiated, or read off).
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Progress = Callable[[int, int], None]


def logit_score(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The target class's logit (pytorch-grad-cam's ``ClassifierOutputTarget``)."""
    return logits.gather(1, targets.view(-1, 1).to(logits.device)).squeeze(1)


def softmax_score(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The target class's softmax probability (pytorch-grad-cam's ``ClassifierOutputSoftmaxTarget``)."""
    return logits.softmax(dim=1).gather(1, targets.view(-1, 1).to(logits.device)).squeeze(1)


SCORES: dict[str, ScoreFn] = {"logit": logit_score, "softmax": softmax_score}


def score_function(name: str | ScoreFn) -> ScoreFn:
    """``logit`` or ``softmax`` (or a callable ``score(logits, targets) -> (B,)``, returned as is)."""
    if callable(name):
        return name
    try:
        return SCORES[str(name).strip().lower()]
    except KeyError:
        raise InputError(f"score '{name}' is unknown: use logit or softmax") from None


@dataclass
class MethodContext:
    """What a method may need beyond one layer's tensors.

    Attributes:
        model: the model (needed by methods that run it again: ScoreCAM, AblationCAM, ShapleyCAM).
        input_tensor: the model input (B, C, H, W), one row per (image, target).
        targets: the explained class per row (B,).
        logits: the model's logits on ``input_tensor`` (B, K), when already known.
        score: what is explained, ``score(logits, targets) -> (B,)``; default the target logit.
        image_index: per row, which image it shows; rows of one image share their extra forwards.
        batch_size: images per extra forward pass.
        output_key: where the logits are in a tuple/dict model output.
        channels_last: run extra forwards in channels-last memory format (None: on CPU only).
        layer_name: the layer being computed (set for :meth:`CamMethod.cam`).
        record: that layer's record.
        generator: seeds random methods.
        eigen_smooth: first principal component of the weighted maps instead of their sum.
        forwards: extra forward passes (batches) run by methods so far.
        forward_rows: images those passes held in all.
    """

    model: torch.nn.Module | None = None
    input_tensor: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    score: ScoreFn | None = None
    image_index: torch.Tensor | None = None
    batch_size: int = 64
    output_key: str | int | None = None
    channels_last: bool | None = None
    layer_name: str = ""
    record: LayerRecord | None = None
    generator: torch.Generator | None = None
    eigen_smooth: bool = False
    forwards: int = 0
    forward_rows: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def score_fn(self) -> ScoreFn:
        return self.score or logit_score


@dataclass
class LayerJob:
    """One layer's CAM to compute.

    Attributes:
        index: the record's index in the trace.
        record: the layer record (module name, call number, layout, shape).
        acts: activations read as (B, C, h, w), float32.
        grads: d score / d activations, the same shape, or None.
        native: the activation as the layer produced it (its own layout), for methods that put it back.
    """

    index: int
    record: LayerRecord
    acts: torch.Tensor
    grads: torch.Tensor | None = None
    native: torch.Tensor | None = None


def weighted_map(alpha: torch.Tensor, acts: torch.Tensor, ctx: MethodContext) -> torch.Tensor:
    """``sum_k alpha_k A_k`` (B, h, w), or with ``ctx.eigen_smooth`` the first principal component of ``alpha_k A_k``."""
    if alpha.dtype != acts.dtype:
        alpha = alpha.to(acts.dtype)
    if ctx.eigen_smooth:
        from .activation import first_component

        return first_component(alpha[:, :, None, None] * acts)
    b, c, h, w = acts.shape
    # one (1 x C) @ (C x hw) product per image: no (B, C, h, w) temporary
    return torch.bmm(alpha.unsqueeze(1), acts.reshape(b, c, h * w)).view(b, h, w)


class CamMethod:
    """Base class: override :meth:`weights` (channel weights), :meth:`cam` (the whole map), or
    :meth:`cam_batch` (all layers at once, for methods with extra passes).

    Class attributes:
        name: the registry key (``--method NAME``).
        uses_gradients: the single pass must also run the backward.
        needs_model: the method runs the model again (``ctx.model``, ``ctx.input_tensor``, ``ctx.targets``).
        per_layer: a layer's map depends on that layer's tensors only, not on the order layers come
            in: a gradient method with this flag (and no :meth:`cam_batch` of its own) gets each
            layer during the backward, as its gradient arrives.
        description: one line for ``camanim methods`` (default: the docstring's first line).
    """

    name: ClassVar[str] = ""
    uses_gradients: ClassVar[bool] = True
    needs_model: ClassVar[bool] = False
    per_layer: ClassVar[bool] = True
    description: ClassVar[str] = ""

    def weights(self, acts: torch.Tensor, grads: torch.Tensor | None, ctx: MethodContext) -> torch.Tensor:
        """Channel weights alpha of shape (B, C)."""
        raise NotImplementedError(f"{type(self).__name__} must define weights(), cam() or cam_batch()")

    def cam(self, acts: torch.Tensor, grads: torch.Tensor | None, ctx: MethodContext) -> torch.Tensor:
        """The raw map (B, h, w), before ReLU and upsampling."""
        return weighted_map(self.weights(acts, grads, ctx), acts, ctx)

    def cam_batch(self, jobs: Sequence[LayerJob], ctx: MethodContext,
                  progress: Progress | None = None) -> list[torch.Tensor]:
        """The raw maps of every layer of a run, one (B, h, w) per job; default :meth:`cam` per layer."""
        out = []
        for n, job in enumerate(jobs, 1):
            ctx.layer_name, ctx.record = job.record.name, job.record
            out.append(self.cam(job.acts, job.grads, ctx))
            if progress is not None:
                progress(n, len(jobs))
        return out

    def target_score(self, base: ScoreFn) -> ScoreFn:
        """The score this method differentiates; ``base`` (logit or softmax) unless it has its own (FinerCAM)."""
        return base


_REGISTRY: dict[str, type[CamMethod]] = {}

#: pytorch-grad-cam methods that have no per-layer CAM, and why.
REFUSED: dict[str, str] = {
    "fullgrad": "FullGrad sums the input-gradient map and the bias-gradient maps of every Conv/BatchNorm "
                "layer into one input-level saliency map, so it has no per-layer CAM to animate",
    "refinecam": "RefineCAM multiplies the CAMs of several layers into one map, so it has no per-layer CAM",
    "sess": "SESS fuses the CAMs of many rescaled image patches into one map; it is a wrapper around a "
            "per-layer method, not a per-layer CAM itself",
    "guidedbackprop": "Guided Backpropagation is a pixel-level gradient, not a layer's CAM",
    "sobelcam": "SobelCAM is an edge filter on the input image and looks at no layer",
    "deepfeaturefactorization": "Deep Feature Factorization finds several concepts per layer, not one class map",
}


def _key(name: str) -> str:
    return re.sub(r"[-_\s]", "", name.lower())


def register_method(cls: type[CamMethod]) -> type[CamMethod]:
    """Class decorator: make ``cls`` available under ``cls.name`` (CLI, API, docs, tests)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty 'name' to be registered")
    _REGISTRY[cls.name.lower()] = cls
    return cls


def _function_method(fn: Callable, name: str, uses_gradients: bool, needs_model: bool,
                     description: str) -> type[CamMethod]:
    return type(getattr(fn, "__name__", name), (CamMethod,), {
        "name": name, "uses_gradients": uses_gradients, "needs_model": needs_model,
        "description": description or (fn.__doc__ or ""), "__doc__": fn.__doc__,
        "cam": lambda self, a, g, c: fn(a, g, c),
    })


def cam_method(name: str, *, uses_gradients: bool = True, needs_model: bool = False,
               description: str = "") -> Callable:
    """Function decorator: register ``fn(acts, grads, ctx) -> (B, h, w)`` as a method.

    Example:
        >>> @cam_method("meanact", uses_gradients=False)
        ... def mean_activation(acts, grads, ctx):
        ...     return acts.mean(dim=1)
    """

    def deco(fn: Callable[[torch.Tensor, torch.Tensor | None, MethodContext], torch.Tensor]) -> type[CamMethod]:
        return register_method(_function_method(fn, name, uses_gradients, needs_model, description))

    return deco


def list_methods() -> dict[str, str]:
    """Registered method names with a one-line description."""
    out = {}
    for n, c in sorted(_REGISTRY.items()):
        text = (c.description or c.__doc__ or "").strip()
        out[n] = text.splitlines()[0] if text else ""
    return out


def _import_plugin(spec: str) -> object:
    mod_name, _, attr = spec.rpartition(":")
    try:
        if mod_name.endswith(".py") or "/" in mod_name or "\\" in mod_name:
            path = Path(mod_name)
            if not path.is_file():
                raise ImportError(f"no file {path}")
            unique = f"camanim_plugin_{abs(hash(str(path.resolve())))}"
            module = sys.modules.get(unique)
            if module is None:
                loader_spec = importlib.util.spec_from_file_location(unique, path)
                if loader_spec is None or loader_spec.loader is None:
                    raise ImportError(f"cannot load {path}")
                module = importlib.util.module_from_spec(loader_spec)
                sys.modules[unique] = module
                loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(mod_name)
        return getattr(module, attr)
    except (ImportError, AttributeError, SyntaxError) as exc:
        raise InputError(f"method plugin '{spec}' cannot be imported ({exc}): give module.path:Name or "
                         "file.py:Name, with the module on PYTHONPATH") from exc


def get_method(spec: str | CamMethod | type[CamMethod]) -> CamMethod:
    """An instance of the method named ``spec``; ``pkg.module:Name`` or ``file.py:Name`` imports a plugin.

    A plugin ``Name`` is a :class:`CamMethod` subclass (registered under its ``name``) or a function
    ``fn(acts, grads, ctx) -> (B, h, w)`` (registered under the function's name, gradients on).

    Raises:
        InputError: unknown name, a plugin that cannot be imported, or a method with no per-layer CAM.
    """
    if isinstance(spec, CamMethod):
        return spec
    if isinstance(spec, type) and issubclass(spec, CamMethod):
        return spec()
    text = str(spec).strip()
    if ":" in text:
        obj = _import_plugin(text)
        if isinstance(obj, type) and issubclass(obj, CamMethod):
            if not obj.name:
                raise InputError(f"method plugin '{text}' needs a class attribute name = '...'")
            if _REGISTRY.get(obj.name.lower()) not in (None, obj) and obj.name.lower() in _BUILTIN:
                raise InputError(f"method plugin '{text}' is named '{obj.name}', a built-in method: rename it")
            register_method(obj)
            return obj()
        if isinstance(obj, CamMethod):
            return obj
        if callable(obj):
            name = getattr(obj, "__name__", text.rpartition(":")[2]).lower()
            if name in _BUILTIN:
                raise InputError(f"method plugin '{text}' is named '{name}', a built-in method: rename it")
            return register_method(_function_method(obj, name, True, False, ""))()
        raise InputError(f"method plugin '{text}' is not a CamMethod class or a function")
    key = _key(text)
    for name, cls in _REGISTRY.items():
        if _key(name) == key:
            return cls()
    if key in REFUSED:
        raise InputError(f"'{text}' is not a per-layer method: {REFUSED[key]}. "
                         f"Use a per-layer method such as gradcam or scorecam ('camanim methods')")
    raise InputError(f"unknown method '{text}': choose one of {', '.join(sorted(_REGISTRY))}")


def get_methods(spec: str | CamMethod | type[CamMethod] | Sequence[str | CamMethod | type[CamMethod]]
                ) -> list[CamMethod]:
    """The methods of ``--method a,b,c`` (or a list), in order, each once.

    Raises:
        InputError: see :func:`get_method`; also an empty list.
    """
    if isinstance(spec, (str, CamMethod, type)):
        items: list = [s for s in str(spec).split(",") if s.strip()] if isinstance(spec, str) else [spec]
    else:
        items = list(spec)
    methods: list[CamMethod] = []
    for item in items:
        m = get_method(item)
        if m.name not in [x.name for x in methods]:
            methods.append(m)
    if not methods:
        raise InputError("no method given: pass --method NAME[,NAME...] (see 'camanim methods')")
    return methods


_BUILTIN: set[str] = set()


def _freeze_builtins() -> None:
    """Remember the built-in names, so a plugin cannot silently replace one."""
    _BUILTIN.update(_REGISTRY)
