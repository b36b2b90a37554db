"""Images: files Pillow reads, built-in samples, and the preprocessing that turns them into input tensors."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from .dicom import DICOM_SAMPLES, is_dicom, read_dicom

#: ``sample:NAME`` -> scikit-image's bundled photo (no download needed).
SAMPLES: dict[str, str] = {
    "cat": "chelsea",
    "coffee": "coffee",
    "rocket": "rocket",
    "motorcycle": "stereo_motorcycle",
    "camera": "camera",
    "astronaut": "astronaut",
}
DEFAULT_IMAGE = "sample:cat"

_INTERP = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
           "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS,
           "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}


def _to_8bit(img: Image.Image) -> Image.Image:
    """Bring 16-bit and float images to 8 bit, keeping their full range."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if img.mode.startswith("I;16"):
            top = 65535.0
        else:
            lo, hi = float(arr.min()), float(arr.max())
            arr = arr - lo
            top = max(hi - lo, 1e-12)
        return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    return img


def load_image(spec: str | Path | Image.Image | np.ndarray) -> tuple[Image.Image, dict[str, Any]]:
    """Load an image as 8-bit RGB.

    Args:
        spec: ``sample:NAME`` (see :data:`SAMPLES`; ``sample:ct`` is DICOM), a path Pillow reads (PNG,
            JPEG, TIFF, BMP, WebP; grey, RGB or RGBA; 8 or 16 bit), a DICOM file (windowed with the
            file's window, see :func:`camanim.sources.dicom.read_dicom`), a PIL image or an HxW /
            HxWxC array.

    Returns:
        The RGB image and a description for the manifest.

    Raises:
        InputError: If the sample name is unknown, or the path is missing, a folder, or not an image
            Pillow (or, for DICOM, pydicom) can read.
    """
    if isinstance(spec, Image.Image):
        return _to_8bit(spec).convert("RGB"), {"source": "PIL.Image", "original_size": list(spec.size)}
    if isinstance(spec, np.ndarray):
        arr = spec
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))) or 0 in arr.shape:
            raise InputError(f"image array of shape {arr.shape}: give (H, W), (H, W, 3) or (H, W, 4) pixels, "
                             "or a (C, H, W) tensor ready for the model")
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating) \
                or not np.isfinite(arr).all():
            raise InputError(f"image array of dtype {arr.dtype}: give finite real pixel values")
        if arr.dtype != np.uint8:
            arr = arr.astype(np.float64)
            arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-12) * 255.0
            arr = arr.round().astype(np.uint8)
        img = Image.fromarray(arr)
        return img.convert("RGB"), {"source": "array", "original_size": [arr.shape[1], arr.shape[0]]}
    text = str(spec)
    if is_dicom(text):
        dicom = read_dicom(text)
        return grey_image(dicom.grey), dicom.info
    if text.startswith("sample:"):
        key = text.split(":", 1)[1]
        if key not in SAMPLES:
            known = [*SAMPLES, *DICOM_SAMPLES]
            raise InputError(f"unknown sample '{text}': choose one of {', '.join('sample:' + k for k in known)}")
        import skimage.data

        arr = getattr(skimage.data, SAMPLES[key])()
        if isinstance(arr, tuple):  # stereo_motorcycle returns (left, right, disparity)
            arr = arr[0]
        img = Image.fromarray(np.asarray(arr)).convert("RGB")
        return img, {"source": text, "original_size": list(img.size)}
    path = Path(text)
    img = _open_file(path)
    size = list(img.size)
    mode = img.mode
    img = _to_8bit(img)
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        # Transparent pixels over black would read as "dark object"; white is the neutral choice.
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img)
    return img.convert("RGB"), {"source": str(path), "original_size": size, "mode": mode}


def _open_file(path: Path) -> Image.Image:
    """The image file at ``path``, loaded (Pillow's decompression-bomb limit enforced).

    Raises:
        InputError: the path is missing, a folder, too large, or not an image Pillow can read.
    """
    if not path.exists():
        raise InputError(f"image '{path}' not found: give an image file or a sample such as sample:cat")
    if path.is_dir():
        raise InputError(f"image '{path}' is a folder: give an image file (PNG, JPEG, TIFF, BMP, WebP)")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that: refuse both alike
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                opened.load()
                return opened.copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(_too_large(path, exc)) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"'{path}' is not an image Pillow can read: give a PNG, JPEG, TIFF, BMP or WebP file") from exc


#: Pillow modes of grey images deeper than 8 bit: 16-bit integers, 32-bit integers, floats
DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def load_grey_values(spec: Any) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The values of a grey image file deeper than 8 bit (16-bit PNG or TIFF, 32-bit or float TIFF).

    Such an image is then windowed and resized as floats, as DICOM is (no 8-bit step), rather than
    read by :func:`load_image`.

    Returns:
        ``(values (H, W) float64, info)`` with info ``source``, ``original_size``, ``mode`` and
        ``full_range`` (``[0, 65535]`` for 16-bit, else None: shown over the values' range); None
        for anything else (8-bit and colour files, samples, DICOM, arrays, PIL images).

    Raises:
        InputError: a file that cannot be read (see :func:`load_image`).
    """
    if not isinstance(spec, (str, Path)) or str(spec).startswith("sample:") or is_dicom(spec):
        return None
    path = Path(spec)
    if not path.is_file():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # _open_file refuses it
            with Image.open(path) as lazy:  # the header only: no pixel is decoded for other files
                deep = lazy.mode in DEEP_MODES
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None  # load_image says why in one line
    if not deep:
        return None
    img = _open_file(path)
    values = np.asarray(img).astype(np.float64)
    if not np.isfinite(values).all():
        raise InputError(f"'{path}' holds NaN or infinite values: give finite pixel values")
    full = [0, 65535] if img.mode.startswith("I;16") else None
    return values, {"source": str(path), "original_size": list(img.size), "mode": img.mode, "full_range": full}


def grey_image(grey: np.ndarray) -> Image.Image:
    """An 8-bit RGB picture of a [0, 1] grey (H, W) or colour (H, W, 3) float image (DICOM's windowed image)."""
    arr = np.clip(np.asarray(grey, dtype=np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).convert("RGB")


def _too_large(path: Path, exc: Exception) -> str:
    """One line for an image whose header claims more pixels than Pillow opens (a decompression bomb)."""
    numbers = [int(n) for n in re.findall(r"\d+", str(exc))]
    size = f"{numbers[0]:,} pixels" if numbers else "too many pixels"
    return (f"image '{path}' claims {size}, more than the {Image.MAX_IMAGE_PIXELS:,} Pillow opens safely (it could be "
            "a decompression bomb): give a smaller image, or raise PIL.Image.MAX_IMAGE_PIXELS in Python if you trust it")


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side, centre-crop, scale to [0, 1], normalise: the usual classifier recipe.

    ``channels=1`` feeds grey-scale models (the mean of ``mean``/``std`` is then per single channel).
    An image file gives 1 (grey) or 3 (RGB) channels; a model that takes another count (2, 4 or
    more: RGB + near-infrared, stacks) is refused in one line when given an image file: pass it a
    (C, H, W) tensor, or a transform that returns C channels.
    """

    resize: int = 256
    crop: tuple[int, int] = (224, 224)
    mean: Sequence[float] = (0.485, 0.456, 0.406)
    std: Sequence[float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    channels: int = 3

    @classmethod
    def imagenet(cls) -> Preprocess:
        """The ImageNet recipe: resize to 256, centre-crop 224x224, ImageNet mean and std, RGB."""
        return cls()

    def _plan(self, size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
        """(resized (w, h), crop box (left, top, right, bottom) in resized pixels) for an image of ``size`` (w, h)."""
        w, h = size
        scale = self.resize / min(w, h)
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        ch, cw = self.crop
        left = int(round((new[0] - cw) / 2.0))
        top = int(round((new[1] - ch) / 2.0))
        return new, (left, top, left + cw, top + ch)

    def crop_box(self, size: tuple[int, int]) -> dict[str, Any]:
        """Where the model's input lies in the original image, for the manifest's ``image`` provenance.

        Args:
            size: the original image's (width, height) in pixels.

        Returns:
            ``{"box": [left, top, right, bottom]`` in original-image pixels (floats, 2 decimals; a box
            past the image's edge means the crop was padded), ``"resized": [w, h]``, ``"resize"``,
            ``"crop": [h, w]`` and ``"lost": [left, top, right, bottom]``: the fraction of the resized
            image's width (left/right) or height (top/bottom) cut away at each side (negative: padded)}``.
        """
        new, (left, top, right, bottom) = self._plan(size)
        sx, sy = new[0] / size[0], new[1] / size[1]
        box = [round(left / sx, 2), round(top / sy, 2), round(right / sx, 2), round(bottom / sy, 2)]
        lost = [left / new[0], top / new[1], (new[0] - right) / new[0], (new[1] - bottom) / new[1]]
        return {"box": box, "resized": list(new), "resize": int(self.resize), "crop": [int(c) for c in self.crop],
                "lost": [round(v, 4) for v in lost]}

    def geometry(self, img: Image.Image) -> Image.Image:
        """The resized and cropped RGB image: what the model sees, before normalisation."""
        new, box = self._plan(img.size)
        img = img.resize(new, _INTERP.get(self.interpolation, Image.Resampling.BILINEAR))
        return img.crop(box)

    def __call__(self, img: Image.Image) -> tuple[torch.Tensor, np.ndarray]:
        """Return the input tensor (1, C, H, W) and the display image (H, W, 3) uint8 it was made from.

        Raises:
            InputError: ``channels`` is neither 1 nor 3 (an image file cannot give that many).
        """
        if self.channels not in (1, 3):
            raise InputError(
                f"the model takes {self.channels}-channel input, but an image file gives 1 (grey) or 3 (RGB): pass a "
                f"({self.channels}, H, W) tensor or a transform that returns {self.channels} channels in Python, or "
                f"--channels 1 or 3 (load_model(channels=)) to give the model a first convolution that takes the image's")
        shown = self.geometry(img.convert("RGB"))
        display = np.asarray(shown, dtype=np.uint8).copy()
        x = torch.from_numpy(display).permute(2, 0, 1).float().div_(255.0)
        return self.normalise(x), display

    def of_values(self, grey: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """The input tensor (1, C, H, W) and display image (H, W, 3) uint8 of a float image in [0, 1].

        For a windowed DICOM image (:class:`camanim.sources.dicom.DicomImage` ``grey``): resized and
        cropped as floats (no 8-bit step: a 16-bit image keeps its levels), then normalised; the
        display image is the same windowed grey picture in 8 bit.

        Args:
            grey: (H, W) grey or (H, W, 3) colour, float in [0, 1].

        Raises:
            InputError: ``channels`` is neither 1 nor 3.
        """
        if self.channels not in (1, 3):
            raise InputError(
                f"the model takes {self.channels}-channel input, but a grey image (DICOM, 16-bit) gives 1 or 3 "
                f"channels: pass a "
                f"({self.channels}, H, W) tensor in Python, or --channels 1 or 3")
        arr = np.asarray(grey, dtype=np.float32)
        planes = [arr] if arr.ndim == 2 else [arr[:, :, k] for k in range(arr.shape[2])]
        shown = np.stack([np.asarray(self.geometry(Image.fromarray(np.ascontiguousarray(p))))
                          for p in planes], axis=0).clip(0.0, 1.0)  # bicubic overshoots the window
        x = torch.from_numpy(np.ascontiguousarray(shown)).float()
        if x.shape[0] == 1 and self.channels == 3:
            x = x.expand(3, -1, -1)
        disp = (shown * 255.0 + 0.5).astype(np.uint8)
        display = np.repeat(disp, 3, axis=0) if disp.shape[0] == 1 else disp
        return self.normalise(x), np.ascontiguousarray(display.transpose(1, 2, 0))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """(1, C, H, W) of a (1 or 3, H, W) image in [0, 1]: grey for one channel, then (x - mean) / std."""
        if self.channels == 1 and x.shape[0] != 1:
            x = x.mean(dim=0, keepdim=True)
        mean = torch.tensor(list(self.mean)[: x.shape[0]] if len(self.mean) >= x.shape[0] else [self.mean[0]])
        std = torch.tensor(list(self.std)[: x.shape[0]] if len(self.std) >= x.shape[0] else [self.std[0]])
        x = (x - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)
        return x.unsqueeze(0)


def split_batch(image: Any, ndim: int, noun: str) -> tuple[list[Any], bool]:
    """The items of ``image`` and whether it named several: a list, or an ``ndim``-D tensor with batch > 1
    (split into batches of one); anything else is one item.

    Raises:
        InputError: an empty list (the message names ``noun``, e.g. "image").
    """
    if isinstance(image, (list, tuple)):
        if not image:
            raise InputError(f"no {noun} given: pass at least one {noun}")
        return list(image), True
    if isinstance(image, torch.Tensor) and image.ndim == ndim and image.shape[0] > 1:
        return [image[i:i + 1] for i in range(image.shape[0])], True
    return [image], False
