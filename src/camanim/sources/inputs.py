"""From what a user passes as an image to the model input and the picture frames are drawn over."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from .images import Preprocess, load_image
from .models import LoadedModel

#: (model input (1, C, H, W), display image (H, W, 3) uint8, image provenance for the manifest)
Prepared = tuple[torch.Tensor, np.ndarray, dict[str, Any]]


def as_images(image: Any) -> tuple[list[Any], bool]:
    """The images of ``image`` and whether it named several (a list, or a 4-D tensor with batch > 1).

    Raises:
        InputError: an empty list.
    """
    if isinstance(image, (list, tuple)):
        if not image:
            raise InputError("no image given: pass at least one image")
        return list(image), True
    if isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[0] > 1:
        return [image[i:i + 1] for i in range(image.shape[0])], True
    return [image], False


def _display_of_tensor(x: torch.Tensor) -> np.ndarray:
    """A (H, W, 3) uint8 picture of a ready input: min-max scaled, grey channels averaged."""
    disp = x[0].detach().float().cpu()
    disp = (disp - disp.min()) / (disp.max() - disp.min() + 1e-12)
    disp = disp.mean(0, keepdim=True).expand(3, -1, -1) if disp.shape[0] != 3 else disp
    return (disp.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def prepare_input(image: Any, preprocess: Callable | None, loaded: LoadedModel | None) -> Prepared:
    """The model input, display image and provenance of one image.

    Args:
        image: ``sample:NAME``, a path, a PIL image, an array, or a ready input tensor (C, H, W) or
            (1, C, H, W) (its display image is the tensor min-max scaled).
        preprocess: a :class:`Preprocess`, a user transform PIL -> (C, H, W) tensor, or None (the
            loaded model's recipe, else ImageNet's).
        loaded: the model being explained, for its preprocessing.

    Raises:
        InputError: the image cannot be read, or a user transform returns something else than a tensor.
    """
    if isinstance(image, torch.Tensor):
        x = image if image.ndim == 4 else image.unsqueeze(0)
        return x, _display_of_tensor(x), {"source": "tensor"}
    pil, info = load_image(image)
    if preprocess is None:
        preprocess = loaded.preprocess if loaded is not None else Preprocess.imagenet()
    if isinstance(preprocess, Preprocess):
        x, disp = preprocess(pil)
        return x, disp, info
    # A user transform (e.g. torchvision's): PIL -> (C, H, W) tensor. The display image is the
    # photo resized to the tensor's size, since we cannot know its crop.
    x = preprocess(pil)
    if not isinstance(x, torch.Tensor):
        raise InputError("the preprocess/transform must return a tensor (C, H, W)")
    x = x if x.ndim == 4 else x.unsqueeze(0)
    disp = np.asarray(pil.convert("RGB").resize((x.shape[-1], x.shape[-2]), Image.Resampling.BILINEAR))
    return x, disp, info
