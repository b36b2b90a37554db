"""Perturbed images scored in shared batches: an image that several layers ask for is run once; a layer's
map scaled and resized to the input as the references do before they perturb with it (:func:`at_input`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..trace import class_scores, eval_mode, logits_of

#: torchcam's CAM normalisation
EPS_SCALE = 1e-8
#: pytorch-grad-cam's (``scale_cam_image``)
EPS_GRAD_CAM = 1e-7


def scaled(cam: torch.Tensor, eps: float = EPS_SCALE) -> torch.Tensor:
    """A map min-max scaled to [0, 1]: ``(m - min) / (max - min + eps)``."""
    m = cam.float() - cam.float().min()
    return m / (m.max() + eps)


def at_input(cam: torch.Tensor, size: Sequence[int], eps: float = EPS_SCALE) -> torch.Tensor:
    """A layer's map as the references take it: :func:`scaled` at its own resolution, then resized to
    ``size`` (H, W), bilinear, ``align_corners=False`` (the identity when it is that size already)."""
    e = scaled(cam, eps)
    if tuple(e.shape[-2:]) == tuple(size):
        return e
    return F.interpolate(e[None, None], size=tuple(int(s) for s in size), mode="bilinear",
                         align_corners=False)[0, 0]


class SharedForwards:
    """Collects perturbed images by key, runs each distinct one once, in batches, and hands back scores.

    ``add(key, make)`` registers an image (``make()`` builds it, (C, H, W), only when it is first asked
    for); ``run()`` scores them all; ``score(key)`` reads one. Keys are the perturbation itself (the
    mask's bytes), so layers with identical masks share the forward.
    """

    def __init__(self, model: nn.Module, target: int, score: str, probability: str = "softmax",
                 batch_size: int = 32, output_key: str | int | None = None) -> None:
        self.model, self.target, self.batch_size, self.output_key = model, int(target), int(batch_size), output_key
        self.kind = "logit" if score == "logit" else probability
        self.todo: dict[bytes, Callable[[], torch.Tensor]] = {}
        self.scores: dict[bytes, float] = {}
        self.forwards = 0
        self.images = 0

    @staticmethod
    def key(*parts: torch.Tensor | str) -> bytes:
        """A key for a perturbation: the hash of its parts (tensors by their bytes)."""
        h = hashlib.blake2b(digest_size=16)
        for p in parts:
            h.update(p.encode() if isinstance(p, str) else p.detach().cpu().contiguous().numpy().tobytes())
        return h.digest()

    def add(self, key: bytes, make: Callable[[], torch.Tensor]) -> bytes:
        """Ask for the score of the image ``make()`` builds, under ``key``; returns ``key``."""
        if key not in self.scores:
            self.todo.setdefault(key, make)
        return key

    def read(self, images: torch.Tensor) -> torch.Tensor:
        """The target's score (probability or logit) of each image in ``images`` (N, C, H, W): (N,)."""
        logits = logits_of(self.model(images), self.output_key)
        return class_scores(logits, self.kind)[:, self.target].float()

    def run(self) -> None:
        """Score every image asked for and not yet scored, ``batch_size`` per forward."""
        keys = list(self.todo)
        with eval_mode(self.model), torch.inference_mode():
            for start in range(0, len(keys), self.batch_size):
                chunk = keys[start:start + self.batch_size]
                images = torch.stack([self.todo[k]() for k in chunk])
                self.forwards += 1
                self.images += len(chunk)
                for k, s in zip(chunk, self.read(images).tolist()):
                    self.scores[k] = float(s)
        self.todo.clear()

    def score(self, key: bytes) -> float:
        """The score of the image asked for under ``key`` (after :meth:`run`)."""
        return self.scores[key]
