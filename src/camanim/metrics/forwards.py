"""Perturbed images scored in shared batches: an image that several layers ask for is run once."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torch import nn

from ..trace import class_scores, eval_mode, logits_of


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
