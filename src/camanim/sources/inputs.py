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


def model_dtype(module: torch.nn.Module) -> torch.dtype | None:
    """The floating-point dtype of the model's first floating parameter or buffer (None: it has none)."""
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


def for_model(x: torch.Tensor, module: torch.nn.Module, device: torch.device) -> torch.Tensor:
    """The input ``x`` (1, C, H, W) as the model takes it: on ``device``, in the model's floating dtype
    (float16/bfloat16 models get half inputs; CAMs are float32 all the same), and an ordinary tensor
    that autograd can use even when it was made under ``torch.inference_mode()``.

    Raises:
        InputError: the model's parameters were made under ``torch.inference_mode()`` (no gradient
            can flow through them).
    """
    if any(p.is_inference() for p in module.parameters()):
        raise InputError("the model's parameters were created under torch.inference_mode(), so no gradient can "
                         "flow through them: build or load the model outside inference mode")
    dtype = model_dtype(module)
    x = x.to(device=device, dtype=dtype if dtype is not None and x.is_floating_point() else x.dtype)
    return x.clone() if x.is_inference() else x


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


def _checked_tensor(x: torch.Tensor, what: str) -> torch.Tensor:
    """``x`` as (1, C, H, W): (C, H, W) or (1, C, H, W), floating point, finite; else one clear line.

    Raises:
        InputError: another rank or batch size, an integer or complex dtype, or NaN/inf values.
    """
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[0] != 1) or 0 in x.shape:
        raise InputError(f"{what} has shape {tuple(x.shape)}: camanim explains images, (C, H, W) or (B, C, H, W) "
                         "tensors; give one of those (volumes and sequences are not supported yet)")
    if not x.is_floating_point():
        raise InputError(f"{what} is {str(x.dtype).removeprefix('torch.')}: give a floating-point tensor, "
                         "normalised as the model expects (or an image file, which camanim normalises)")
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"{what} holds NaN or infinite values: give finite values")
    return x if x.ndim == 4 else x.unsqueeze(0)


def prepare_input(image: Any, preprocess: Callable | None, loaded: LoadedModel | None) -> Prepared:
    """The model input, display image and provenance of one image.

    Args:
        image: ``sample:NAME``, a path, a PIL image, an array, or a ready input tensor (C, H, W) or
            (1, C, H, W) (its display image is the tensor min-max scaled).
        preprocess: a :class:`Preprocess`, a user transform PIL -> (C, H, W) tensor, or None (the
            loaded model's recipe, else ImageNet's).
        loaded: the model being explained, for its preprocessing.

    Returns:
        The input (1, C, H, W), the display image (H, W, 3) uint8 and the image's provenance.

    Raises:
        InputError: the image cannot be read; a tensor (given, or from a user transform) that is not
            (C, H, W) or (1, C, H, W), not floating point, or not finite; a model whose channel
            count an image file cannot give.
    """
    if isinstance(image, torch.Tensor):
        x = _checked_tensor(image, "the input tensor")
        return x, _display_of_tensor(x), {"source": "tensor"}
    pil, info = load_image(image)
    if preprocess is None:
        preprocess = loaded.preprocess if loaded is not None else Preprocess.imagenet()
    if isinstance(preprocess, Preprocess):
        x, disp = preprocess(pil)
        return x, disp, {**info, "crop": preprocess.crop_box(pil.size)}
    # A user transform (e.g. torchvision's): PIL -> (C, H, W) tensor. The display image is the
    # photo resized to the tensor's size, since we cannot know its crop.
    x = preprocess(pil)
    if not isinstance(x, torch.Tensor):
        raise InputError("the preprocess/transform must return a tensor (C, H, W)")
    x = _checked_tensor(x, "the preprocess/transform's output")
    disp = np.asarray(pil.convert("RGB").resize((x.shape[-1], x.shape[-2]), Image.Resampling.BILINEAR))
    return x, disp, info
