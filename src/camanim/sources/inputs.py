"""From what a user passes as an image to the model input and the picture frames are drawn over."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from .dicom import apply_window, is_dicom, parse_window, read_dicom, window_for
from .images import Preprocess, grey_image, load_grey_values, load_image, split_batch
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
    return split_batch(image, 4, "image")


def _with_input_spacing(info: dict[str, Any], preprocess: Preprocess) -> dict[str, Any]:
    """``info`` with ``input_pixel_spacing_mm``: the pixel spacing of the model input (and of the
    CAMs and frames), after ``preprocess`` resized the image (its crop keeps the spacing)."""
    spacing = info.get("pixel_spacing_mm")
    if not spacing:
        return info
    w, h = info["original_size"]
    scale = preprocess.resize / min(w, h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    return {**info, "input_pixel_spacing_mm": [round(spacing[0] * h / new_h, 6), round(spacing[1] * w / new_w, 6)]}


def _deep_window(values: np.ndarray, info: dict[str, Any], window: tuple[float, float] | None) -> dict[str, Any]:
    """The window of a 16-bit or float grey file: ``--window``, else its full 16-bit range, else its values' range."""
    full = info.get("full_range")
    if window is None and full is not None:
        lo, hi = full
        return {"centre": (lo + hi) / 2.0, "width": float(hi - lo), "function": "LINEAR_EXACT", "source": "16-bit range"}
    return window_for(values, None, window)


def _what(image: Any) -> str:
    """A few words naming what a user passed as an image, for an error line."""
    if isinstance(image, (str,)) or hasattr(image, "__fspath__"):
        return f"'{image}'"
    return f"a {type(image).__name__}"


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
                         "tensors; give one of those (volumes (C, D, H, W) go to models with 3-D convolutions)")
    if not x.is_floating_point():
        raise InputError(f"{what} is {str(x.dtype).removeprefix('torch.')}: give a floating-point tensor, "
                         "normalised as the model expects (or an image file, which camanim normalises)")
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"{what} holds NaN or infinite values: give finite values")
    return x if x.ndim == 4 else x.unsqueeze(0)


def prepare_input(image: Any, preprocess: Callable | None, loaded: LoadedModel | None, *,
                  window: str | tuple[float, float] | None = None, frame: int | None = None) -> Prepared:
    """The model input, display image and provenance of one image.

    A DICOM image (a ``.dcm`` file, ``sample:ct``) is windowed first (``window``, else the file's),
    then resized, cropped and normalised as floats, so the model's normalisation comes after the
    window and a 16-bit image keeps its levels; its display image is the windowed grey picture. A
    16-bit or float grey file (PNG, TIFF) goes the same way, windowed by ``window`` in its stored
    values, else over the full 16-bit range (float and 32-bit files: over their values' range).

    Args:
        image: ``sample:NAME``, a path, a PIL image, an array, or a ready input tensor (C, H, W) or
            (1, C, H, W) (its display image is the tensor min-max scaled).
        preprocess: a :class:`Preprocess`, a user transform PIL -> (C, H, W) tensor, or None (the
            loaded model's recipe, else ImageNet's). A user transform is given a DICOM image as
            the 8-bit RGB picture of its windowed grey image.
        loaded: the model being explained, for its preprocessing.
        window: ``(centre, width)`` or ``"C,W"`` for a DICOM image, in its rescaled unit (Hounsfield
            units for CT), instead of the file's window; for a 16-bit or float grey file, in its
            stored values.
        frame: the frame of a multi-frame DICOM file, from 0.

    Returns:
        The input (1, C, H, W), the display image (H, W, 3) uint8 and the image's provenance.

    Raises:
        InputError: the image cannot be read; a tensor (given, or from a user transform) that is not
            (C, H, W) or (1, C, H, W), not floating point, or not finite; a model whose channel
            count an image file cannot give; ``frame`` for an image that is not DICOM, ``window`` for
            one that is neither DICOM nor a 16-bit or float grey file;
            a bad DICOM file, window or frame (see :func:`camanim.sources.dicom.read_dicom`).
    """
    if frame is not None and not is_dicom(image):
        raise InputError(f"--frame applies to multi-frame DICOM files, not to {_what(image)}: drop --frame")
    deep = load_grey_values(image) if not is_dicom(image) else None
    if window is not None and not is_dicom(image) and deep is None:
        raise InputError(f"--window applies to DICOM images (.dcm, sample:ct) and 16-bit or float grey images, "
                         f"not to {_what(image)}: drop --window")
    if isinstance(image, torch.Tensor):
        x = _checked_tensor(image, "the input tensor")
        return x, _display_of_tensor(x), {"source": "tensor"}
    if preprocess is None:
        preprocess = loaded.preprocess if loaded is not None else Preprocess.imagenet()
    if is_dicom(image):
        dicom = read_dicom(image, window=window, frame=frame)
        if isinstance(preprocess, Preprocess):
            x, disp = preprocess.of_values(dicom.grey)
            return x, disp, _with_input_spacing(dicom.info, preprocess)
        pil, info = grey_image(dicom.grey), dicom.info
    elif deep is not None:  # a 16-bit or float grey file: windowed and resized as floats, as DICOM
        values, info = deep
        chosen = _deep_window(values, info, parse_window(window))
        grey = apply_window(values, chosen)
        info = {**info, "window": chosen}
        if isinstance(preprocess, Preprocess):
            x, disp = preprocess.of_values(grey)
            return x, disp, info
        pil = grey_image(grey)
    else:
        pil, info = load_image(image)
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
