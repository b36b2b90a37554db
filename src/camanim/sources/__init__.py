"""Where models, images and labels come from."""

from .images import DEFAULT_IMAGE, SAMPLES, Preprocess, load_image
from .labels import imagenet_labels, read_labels, resolve_target
from .models import (
    DEFAULT_MODEL,
    LoadedModel,
    default_preprocess,
    list_models,
    load_checkpoint_into,
    load_model,
    register_builtin,
)

__all__ = [
    "DEFAULT_IMAGE", "DEFAULT_MODEL", "SAMPLES", "LoadedModel", "Preprocess", "default_preprocess", "imagenet_labels",
    "list_models", "load_checkpoint_into", "load_image", "load_model", "read_labels", "register_builtin",
    "resolve_target",
]
