"""sources: where models, images and labels come from.

``models`` (names, checkpoints, pickled models -> :class:`LoadedModel`), ``images`` (files and
samples -> 8-bit RGB, :class:`Preprocess`), ``labels`` (class names, ``--target`` by label),
``inputs`` (what a user passes -> model input + display image), ``dicom`` (DICOM files and series
through pydicom: rescaled values, windows, de-identified metadata).
"""

from .dicom import DICOM_SAMPLES, DicomImage, apply_window, read_dicom, read_dicom_series
from .images import DEFAULT_IMAGE, SAMPLES, Preprocess, load_image
from .inputs import Prepared, as_images, for_model, model_dtype, prepare_input
from .labels import imagenet_labels, read_labels, resolve_target
from .models import (
    DEFAULT_MODEL,
    LoadedModel,
    default_preprocess,
    detector_at,
    list_models,
    load_checkpoint_into,
    load_model,
    register_builtin,
    state_dict_for,
    with_channels,
    with_input_size,
)
from .volumes import (
    PreparedVolume,
    as_volumes,
    is_volume_model,
    is_volume_source,
    prepare_volume,
    takes_volumes,
)

__all__ = [
    "DICOM_SAMPLES", "DicomImage", "apply_window", "read_dicom", "read_dicom_series",
    "DEFAULT_IMAGE", "DEFAULT_MODEL", "SAMPLES", "LoadedModel", "Prepared", "Preprocess", "as_images", "default_preprocess", "detector_at", "for_model", "imagenet_labels",
    "list_models", "model_dtype", "state_dict_for", "with_channels", "with_input_size", "load_checkpoint_into", "load_image", "load_model", "prepare_input", "read_labels", "register_builtin",
    "resolve_target", "PreparedVolume", "as_volumes", "is_volume_model", "is_volume_source", "prepare_volume", "takes_volumes",
]
