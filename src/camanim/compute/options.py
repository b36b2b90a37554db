"""What a CAM computation is asked to do: one frozen :class:`CamOptions`, built once and passed down whole."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..errors import InputError
from ..methods import SCORES, ScoreFn
from ..trace import LayerSpec


@dataclass(frozen=True)
class CamOptions:
    """Everything the engine needs besides the model, the inputs and the methods.

    Built once, by the CLI from its flags or by :func:`camanim.animate` from its keywords, and
    handed down whole (rows -> engine -> one pass -> trace).

    Attributes:
        layers: ``all``, ``leaves``, a glob, ``re:REGEX``, ``type:Conv2d`` or a list of names
            (see :func:`camanim.trace.select_layers`).
        target: class index or label, ``topk:K``, a list with one per image, or None (each
            image's predicted class); or a target on the model's output (a callable, ``seg:``,
            ``similar:``, ``box:``; see :mod:`camanim.compute.targets`).
        score: what a CAM explains: the target's ``logit``, its ``softmax`` probability, or its
            ``sigmoid`` probability (multi-label models, each class on its own), or a callable
            ``score(logits, targets) -> (R,)``. A model with one output logit has two classes, 1
            (logit z) and 0 (logit -z), and its probability is always the sigmoid.
        eigen_smooth: first principal component of the weighted maps (methods that support it).
        aug_smooth: pytorch-grad-cam's test-time augmentation (six passes; see :mod:`.engine`).
        batch_size: images per extra forward of ScoreCAM/AblationCAM; None: 8 on the CPU, 64 on a GPU
            (:meth:`for_device`).
        seed: seeds RandomCAM's weights.
        output_key: where the logits are in a tuple/dict/dataclass model output.
        layouts: ``{layer name: layout}`` overriding layout detection (see :mod:`camanim.trace.layouts`).
        skip_non_spatial: leave out layers without a 2-D map instead of drawing their 1-D evidence.
        guided: compute each (image, target)'s guided backpropagation once (its logit, as
            pytorch-grad-cam's ``GuidedBackpropReLUModel``), so frames show Guided Grad-CAM: each layer's
            normalised CAM times it.

    Raises:
        InputError: (on construction) a batch size below 1, an unknown score, or a layout entry
            that is not ``name -> layout`` text.
    """

    layers: LayerSpec = "all"
    target: Any = None
    score: str | ScoreFn = "logit"
    eigen_smooth: bool = False
    aug_smooth: bool = False
    batch_size: int | None = None
    seed: int = 0
    output_key: str | int | None = None
    layouts: Mapping[str, str] = field(default_factory=dict, hash=False)
    skip_non_spatial: bool = False
    guided: bool = False

    def __post_init__(self) -> None:
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or int(self.batch_size) < 1):
            raise InputError(f"--batch-size {self.batch_size} must be at least 1")
        if isinstance(self.score, str) and self.score.strip().lower() not in SCORES:
            raise InputError(f"score '{self.score}' is unknown: use logit, softmax or sigmoid")
        if not isinstance(self.layers, str) and isinstance(self.layers, Sequence):
            object.__setattr__(self, "layers", tuple(self.layers))
        if isinstance(self.target, list):
            object.__setattr__(self, "target", tuple(self.target))
        for name, layout in dict(self.layouts or {}).items():
            if not isinstance(name, str) or not isinstance(layout, str):
                raise InputError(f"layout override {name!r}: {layout!r} must map a layer name to a layout name")
        # read-only, so the options stay what they were built as
        object.__setattr__(self, "layouts", MappingProxyType(dict(self.layouts or {})))

    def for_device(self, device_type: str) -> CamOptions:
        """These options with the batch size settled for ``device_type`` (``cpu`` or ``cuda``)."""
        if self.batch_size is not None:
            return self
        return dataclasses.replace(self, batch_size=64 if device_type == "cuda" else 8)

    def manifest(self, method_names: Sequence[str]) -> dict[str, Any]:
        """The ``options`` entry of ``manifest.json`` (what a reader needs to reproduce the run)."""
        return {"methods": list(method_names), "score": self.score if isinstance(self.score, str) else "custom",
                "eigen_smooth": self.eigen_smooth, "aug_smooth": self.aug_smooth, "batch_size": self.batch_size,
                "layers": self.layers if self.layers is None or isinstance(self.layers, str) else list(self.layers),
                "guided": self.guided,
                **({"output_key": self.output_key} if self.output_key is not None else {})}
