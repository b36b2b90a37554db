"""The CAM method interface and its one registry.

A method turns one layer's activations A (B, C, h, w) and gradients dS/dA into
a raw map (B, h, w) before ReLU. Most methods only define channel weights
alpha (B, C); the map is then sum_k alpha_k A_k (the paper's Eq. 1).
Adding a method is one small class with ``@register_method``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..errors import InputError


@dataclass
class MethodContext:
    """What a method may need beyond one layer's tensors."""

    model: torch.nn.Module | None = None
    input_tensor: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    layer_name: str = ""
    generator: torch.Generator | None = None
    eigen_smooth: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class CamMethod:
    """Base class: override :meth:`weights` (channel weights) or :meth:`cam` (the whole map)."""

    name: ClassVar[str] = ""
    uses_gradients: ClassVar[bool] = True
    description: ClassVar[str] = ""

    def weights(self, acts: torch.Tensor, grads: torch.Tensor | None, ctx: MethodContext) -> torch.Tensor:
        """Channel weights alpha of shape (B, C)."""
        raise NotImplementedError(f"{type(self).__name__} must define weights() or cam()")

    def cam(self, acts: torch.Tensor, grads: torch.Tensor | None, ctx: MethodContext) -> torch.Tensor:
        """The raw map (B, h, w), before ReLU and upsampling."""
        alpha = self.weights(acts, grads, ctx)
        weighted = alpha[:, :, None, None] * acts
        if ctx.eigen_smooth:
            from .activation import first_component

            return first_component(weighted)
        return weighted.sum(dim=1)


_REGISTRY: dict[str, type[CamMethod]] = {}


def register_method(cls: type[CamMethod]) -> type[CamMethod]:
    """Class decorator: make ``cls`` available under ``cls.name`` (CLI, API, docs, tests)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty 'name' to be registered")
    _REGISTRY[cls.name.lower()] = cls
    return cls


def cam_method(name: str, *, uses_gradients: bool = True, description: str = "") -> Callable:
    """Function decorator: register ``fn(acts, grads, ctx) -> (B, h, w)`` as a method."""

    def deco(fn: Callable[[torch.Tensor, torch.Tensor | None, MethodContext], torch.Tensor]) -> type[CamMethod]:
        cls = type(fn.__name__, (CamMethod,), {
            "name": name, "uses_gradients": uses_gradients, "description": description or (fn.__doc__ or ""),
            "cam": lambda self, a, g, c: fn(a, g, c),
        })
        return register_method(cls)

    return deco


def list_methods() -> dict[str, str]:
    """Registered method names with a one-line description."""
    return {n: (c.description or (c.__doc__ or "")).strip().splitlines()[0] if (c.description or c.__doc__) else ""
            for n, c in sorted(_REGISTRY.items())}


def get_method(spec: str | CamMethod | type[CamMethod]) -> CamMethod:
    """An instance of the method named ``spec`` (or ``pkg.module:Name`` to import a plugin)."""
    if isinstance(spec, CamMethod):
        return spec
    if isinstance(spec, type) and issubclass(spec, CamMethod):
        return spec()
    text = str(spec).strip()
    if ":" in text:
        mod_name, _, attr = text.partition(":")
        try:
            obj = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as exc:
            raise InputError(f"method plugin '{text}' cannot be imported ({exc}): give module.path:ClassName") from exc
        if isinstance(obj, type) and issubclass(obj, CamMethod):
            if obj.name and obj.name.lower() not in _REGISTRY:
                register_method(obj)
            return obj()
        if callable(obj):
            cls = cam_method(getattr(obj, "__name__", attr).lower())(obj)
            return cls()
        raise InputError(f"method plugin '{text}' is not a CamMethod class or a function")
    key = text.lower().replace("-", "").replace("_", "")
    for name, cls in _REGISTRY.items():
        if name.replace("-", "").replace("_", "") == key:
            return cls()
    raise InputError(f"unknown method '{text}': choose one of {', '.join(sorted(_REGISTRY))}")
