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

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import InputError
from ..trace import LayerRecord, class_scores

#: ``score(logits (B, K), targets (B,)) -> (B,)``: what a CAM explains (differentiated, or read off).
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Progress = Callable[[int, int], None]


def _gather(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return scores.gather(1, targets.view(-1, 1).to(scores.device)).squeeze(1)


def logit_score(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The target class's logit (pytorch-grad-cam's ``ClassifierOutputTarget``).

    A one-logit model's classes are 1 (logit z) and 0 (logit -z); see :func:`camanim.trace.class_logits`.
    """
    return _gather(class_scores(logits, "logit"), targets)


def softmax_score(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The target class's softmax probability (pytorch-grad-cam's ``ClassifierOutputSoftmaxTarget``).

    A one-logit model's probability is its sigmoid (softmax over one logit is the constant 1).
    """
    return _gather(class_scores(logits, "softmax"), targets)


def sigmoid_score(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The target class's sigmoid probability, each class on its own (multi-label models, one-logit models)."""
    return _gather(class_scores(logits, "sigmoid"), targets)


SCORES: dict[str, ScoreFn] = {"logit": logit_score, "softmax": softmax_score, "sigmoid": sigmoid_score}


def score_function(name: str | ScoreFn) -> ScoreFn:
    """The score function named ``logit``, ``softmax`` or ``sigmoid`` (or a callable, returned as is).

    Args:
        name: ``"logit"``, ``"softmax"`` or ``"sigmoid"`` (case and surrounding spaces ignored), or a callable
            ``score(logits (B, K), targets (B,)) -> (B,)``.

    Returns:
        The score function.

    Raises:
        InputError: If ``name`` is neither a known score nor callable.
    """
    if callable(name):
        return name
    try:
        return SCORES[str(name).strip().lower()]
    except KeyError:
        raise InputError(f"score '{name}' is unknown: use logit, softmax or sigmoid") from None


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
        """The score explained: ``score`` if set, else the target's logit (:func:`logit_score`)."""
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


def warn_flagged(jobs: Sequence[LayerJob], flag: str, method: str, why: str, remedy: str) -> None:
    """One ``RuntimeWarning`` naming how many of ``jobs`` carry ``flag`` (a method that does not apply to
    them, ``why``), or none when no job does.

    Raises:
        InputError: every job carries ``flag``: the method applies to none of the chosen layers, and a run of
            empty maps would explain nothing (``remedy`` says what to choose instead).
    """
    flagged = [job.record.name for job in jobs if flag in job.record.flags]
    if flagged and len(flagged) == len(jobs):
        if len(jobs) == 1:
            raise InputError(f"{method} does not apply to the chosen layer {flagged[0]} ({why}): {remedy}")
        raise InputError(f"{method} applies to none of the {len(jobs)} chosen layers ({why}), e.g. {flagged[0]}: "
                         f"{remedy}")
    if flagged:
        warnings.warn(f"{method} does not apply to {len(flagged)} of {len(jobs)} layers ({why}), e.g. "
                      f"{flagged[0]}: their maps are empty and the manifest's 'flags' say why", RuntimeWarning,
                      stacklevel=3)


def first_component(acts: torch.Tensor) -> torch.Tensor:
    """Project each image's centred (h*w, C) activation matrix on its first right singular vector.

    The same quantity as pytorch-grad-cam's ``get_2d_projection`` (EigenCAM, Muhammad & Yeasin 2020,
    https://arxiv.org/abs/2008.00299), without its full (h*w)^2 U matrix, up to the sign. A singular
    vector's sign is arbitrary and decides the map after the ReLU: pytorch-grad-cam keeps whatever
    sign LAPACK returns, which changes with the number of BLAS threads (the same model and image then
    give a map or its complement). camanim fixes it: the component is oriented so that it agrees
    with the plain channel sum of the same matrix (a positive dot product with it), and LAPACK's
    choice never shows.

    Args:
        acts: (B, C, h, w) activations (or weighted activations).

    Returns:
        (B, h, w) projections, same dtype and device.
    """
    acts = torch.nan_to_num(acts)
    b, c, h, w = acts.shape
    out = acts.new_empty((b, h, w))
    for i in range(b):
        x = acts[i].reshape(c, h * w).T
        x = x - x.mean(dim=0)
        _, _, vt = np.linalg.svd(x.detach().cpu().numpy(), full_matrices=False)
        v = torch.from_numpy(vt[0]).to(device=x.device, dtype=x.dtype)
        proj = x @ v
        if float(proj @ x.sum(dim=1)) < 0:
            proj = -proj
        out[i] = proj.reshape(h, w)
    return out


def weighted_map(alpha: torch.Tensor, acts: torch.Tensor, ctx: MethodContext) -> torch.Tensor:
    """``sum_k alpha_k A_k`` (B, h, w), or with ``ctx.eigen_smooth`` the first principal component of ``alpha_k A_k``."""
    if alpha.dtype != acts.dtype:
        alpha = alpha.to(acts.dtype)
    if ctx.eigen_smooth:
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
        volumes: the method's map of a volume (B, C, D, H, W) read as (B, C, D, H*W) is its 3-D map:
            it works position by position or from sums and means over all positions (no neighbourhood,
            no resizing to the input). False unless a method says so: methods that are not are refused
            on volumes instead of giving a wrong map.
        needs_classes: the method's score compares the target class with other classes (FinerCAM):
            it is refused for a target on the model's output (a segmentation region, a similarity).
    """

    name: ClassVar[str] = ""
    uses_gradients: ClassVar[bool] = True
    needs_model: ClassVar[bool] = False
    needs_classes: ClassVar[bool] = False
    per_layer: ClassVar[bool] = True
    description: ClassVar[str] = ""
    volumes: ClassVar[bool] = False

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
