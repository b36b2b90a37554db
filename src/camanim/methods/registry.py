"""The one registry of CAM methods: built-ins, ``@register_method``/``@cam_method`` and plugins."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..errors import InputError
from .base import CamMethod, MethodContext

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
    """Class decorator: make ``cls`` available under ``cls.name`` (CLI, API, docs, tests).

    A later class with the same (case-insensitive) name replaces the earlier one.

    Returns:
        ``cls`` itself.

    Raises:
        ValueError: If ``cls.name`` is empty.
    """
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


def freeze_builtins() -> None:
    """Remember the built-in names, so a plugin cannot silently replace one."""
    _BUILTIN.update(_REGISTRY)
