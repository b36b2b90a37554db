"""Images: files Pillow reads, built-in samples, and the preprocessing that turns them into input tensors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import InputError

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
        spec: ``sample:NAME`` (see :data:`SAMPLES`), a path Pillow reads (PNG, JPEG, TIFF, BMP, WebP;
            grey, RGB or RGBA; 8 or 16 bit), a PIL image or an HxW / HxWxC array.

    Returns:
        The RGB image and a description for the manifest.

    Raises:
        InputError: If the sample name is unknown, or the path is missing, a folder, or not an image
            Pillow can read.
    """
    if isinstance(spec, Image.Image):
        return _to_8bit(spec).convert("RGB"), {"source": "PIL.Image", "original_size": list(spec.size)}
    if isinstance(spec, np.ndarray):
        arr = spec
        if arr.dtype != np.uint8:
            arr = arr.astype(np.float64)
            arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-12) * 255.0
            arr = arr.round().astype(np.uint8)
        img = Image.fromarray(arr)
        return img.convert("RGB"), {"source": "array", "original_size": [arr.shape[1], arr.shape[0]]}
    text = str(spec)
    if text.startswith("sample:"):
        key = text.split(":", 1)[1]
        if key not in SAMPLES:
            raise InputError(f"unknown sample '{text}': choose one of {', '.join('sample:' + k for k in SAMPLES)}")
        import skimage.data

        arr = getattr(skimage.data, SAMPLES[key])()
        if isinstance(arr, tuple):  # stereo_motorcycle returns (left, right, disparity)
            arr = arr[0]
        img = Image.fromarray(np.asarray(arr)).convert("RGB")
        return img, {"source": text, "original_size": list(img.size)}
    path = Path(text)
    if not path.exists():
        raise InputError(f"image '{path}' not found: give an image file or a sample such as sample:cat")
    if path.is_dir():
        raise InputError(f"image '{path}' is a folder: give an image file (PNG, JPEG, TIFF, BMP, WebP)")
    try:
        with Image.open(path) as opened:
            opened.load()
            img = opened.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"'{path}' is not an image Pillow can read: give a PNG, JPEG, TIFF, BMP or WebP file") from exc
    size = list(img.size)
    mode = img.mode
    img = _to_8bit(img)
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        # Transparent pixels over black would read as "dark object"; white is the neutral choice.
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img)
    return img.convert("RGB"), {"source": str(path), "original_size": size, "mode": mode}


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side, centre-crop, scale to [0, 1], normalise: the usual classifier recipe.

    ``channels=1`` feeds grey-scale models (the mean of ``mean``/``std`` is then per single channel).
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

    def geometry(self, img: Image.Image) -> Image.Image:
        """The resized and cropped RGB image: what the model sees, before normalisation."""
        w, h = img.size
        scale = self.resize / min(w, h)
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        img = img.resize(new, _INTERP.get(self.interpolation, Image.Resampling.BILINEAR))
        ch, cw = self.crop
        left = int(round((new[0] - cw) / 2.0))
        top = int(round((new[1] - ch) / 2.0))
        return img.crop((left, top, left + cw, top + ch))

    def __call__(self, img: Image.Image) -> tuple[torch.Tensor, np.ndarray]:
        """Return the input tensor (1, C, H, W) and the display image (H, W, 3) uint8 it was made from."""
        shown = self.geometry(img.convert("RGB"))
        display = np.asarray(shown, dtype=np.uint8).copy()
        x = torch.from_numpy(display).permute(2, 0, 1).float().div_(255.0)
        if self.channels == 1:
            x = x.mean(dim=0, keepdim=True)
        mean = torch.tensor(list(self.mean)[: x.shape[0]] if len(self.mean) >= x.shape[0] else [self.mean[0]])
        std = torch.tensor(list(self.std)[: x.shape[0]] if len(self.std) >= x.shape[0] else [self.std[0]])
        x = (x - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)
        return x.unsqueeze(0), display
