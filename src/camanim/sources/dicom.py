"""DICOM images and series through pydicom: values, windows, and only de-identified metadata.

One file (``scan.dcm``, ``sample:ct``) becomes a :class:`DicomImage`: the stored pixels through the
file's Modality LUT (rescale slope and intercept: Hounsfield units for CT), then a window (the
file's, ``--window C,W``, or the values' range when the file has none) into [0, 1], with
MONOCHROME1 inverted, as the grey image the model and the frames see. A folder of single-slice files
becomes a volume with :func:`read_dicom_series` (values rescaled, not windowed).

**De-identification by a whitelist.** Nothing of a dataset reaches camanim's outputs except the
technical fields this module copies by name (:func:`_technical`): modality, photometric
interpretation, sizes, bits, rescale, window, pixel and slice spacing, frame count and the transfer
syntax's name. Names, IDs, dates, UIDs, institutions and every other tag are never read into the
metadata, so no manifest, report or frame can carry them.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

logger = logging.getLogger(__name__)

#: ``sample:NAME`` -> a DICOM test file pydicom's package ships (read from the installed package).
DICOM_SAMPLES: dict[str, str] = {"ct": "CT_small.dcm"}

_SUFFIXES = (".dcm", ".dicom", ".dic")
_CODE = re.compile(r"^[A-Z0-9 _]{1,16}$")  # a DICOM code string (CS): modality, rescale type
_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


def _pydicom():
    """The pydicom module.

    Raises:
        InputError: pydicom is not installed.
    """
    try:
        import pydicom
    except ImportError as exc:  # pragma: no cover - pydicom is in the test extra
        raise InputError("reading DICOM needs pydicom: pip install 'camanim[dicom]' (or pip install pydicom)") from exc
    return pydicom


def is_dicom(spec: Any) -> bool:
    """Whether ``spec`` names a DICOM image: ``sample:ct``, a ``.dcm``/``.dicom`` path, or a file whose
    bytes 128-131 are ``DICM`` (the DICOM preamble's marker)."""
    if not isinstance(spec, (str, Path)):
        return False
    text = str(spec)
    if text.startswith("sample:"):
        return text.split(":", 1)[1] in DICOM_SAMPLES
    path = Path(text)
    if path.suffix.lower() in _SUFFIXES:
        return True
    try:
        with path.open("rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def sample_path(name: str) -> Path:
    """The file of DICOM sample ``name`` (``ct``): pydicom's own test file, from the installed package.

    Raises:
        InputError: an unknown sample name, or pydicom missing.
    """
    if name not in DICOM_SAMPLES:
        raise InputError(f"unknown DICOM sample 'sample:{name}': choose one of "
                         f"{', '.join('sample:' + k for k in DICOM_SAMPLES)}")
    _pydicom()
    from pydicom.data import get_testdata_file

    found = get_testdata_file(DICOM_SAMPLES[name])
    if found is None:  # pragma: no cover - the file ships in pydicom's wheel
        raise InputError(f"pydicom's test file {DICOM_SAMPLES[name]} is missing: reinstall pydicom")
    return Path(str(found))


def parse_window(window: str | tuple[float, float] | list[float] | None) -> tuple[float, float] | None:
    """``"C,W"`` or ``(centre, width)`` as floats (None stays None); the width must be positive.

    Raises:
        InputError: not two finite numbers, or a width of 0 or less.
    """
    if window is None:
        return None
    parts: list[Any] = [p.strip() for p in window.split(",")] if isinstance(window, str) else list(window)
    try:
        values = [float(p) for p in parts]
    except (TypeError, ValueError):
        values = []
    if len(values) != 2 or not all(math.isfinite(v) for v in values):
        raise InputError(f"--window {window!r}: give the window's centre and width, e.g. --window 40,400 "
                         "(soft tissue in Hounsfield units)")
    if values[1] <= 0:
        raise InputError(f"--window {window!r}: the width must be above 0, e.g. --window 40,400")
    return values[0], values[1]


def apply_window(values: np.ndarray, window: dict[str, Any]) -> np.ndarray:
    """Window rescaled values into [0, 1], as DICOM's VOI LUT function (PS3.3 C.11.2.1.2 and C.11.2.1.3).

    Args:
        values: rescaled values of any shape (Hounsfield units for CT).
        window: ``{"centre", "width", "function"}``; function ``LINEAR`` (the standard's default:
            centre - 0.5 and width - 1), ``LINEAR_EXACT`` or ``SIGMOID``.

    Returns:
        float32 array of ``values``' shape in [0, 1] (0 at and below the window, 1 above it).

    Raises:
        InputError: an unknown function, or a width the function does not take.
    """
    c, w = float(window["centre"]), float(window["width"])
    function = str(window.get("function") or "LINEAR").upper()
    x = np.asarray(values, dtype=np.float64)
    if function == "SIGMOID":
        if w <= 0:
            raise InputError(f"window width {w:g} must be above 0 for the SIGMOID window: give another --window")
        return (1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))).astype(np.float32)
    if function == "LINEAR":
        if w < 1:
            raise InputError(f"window width {w:g} must be 1 or more for the LINEAR window: give another --window")
        c, w = c - 0.5, w - 1.0
    elif function != "LINEAR_EXACT":
        raise InputError(f"the file's VOI LUT function '{function}' is not one of {', '.join(_FUNCTIONS)}: "
                         "give --window C,W to window it linearly")
    elif w <= 0:
        raise InputError(f"window width {w:g} must be above 0: give another --window")
    if w == 0:  # LINEAR with width 1: a threshold at the centre
        return (x > c).astype(np.float32)
    return np.clip((x - c) / w + 0.5, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class DicomImage:
    """One DICOM image, read and windowed.

    Attributes:
        values: (H, W) float32, the stored values through the Modality LUT (Hounsfield units for
            CT), not windowed, not inverted; (H, W, 3) in [0, 1] for a colour file.
        grey: (H, W) float32 in [0, 1]: ``values`` windowed, MONOCHROME1 inverted (bright = high
            for MONOCHROME2); (H, W, 3) for a colour file. What the model and the frames see.
        info: de-identified metadata for the manifest (see :func:`read_dicom`).
    """

    values: np.ndarray
    grey: np.ndarray
    info: dict[str, Any]


def _read(path: Path, pydicom: Any, what: str = "") -> Any:
    """The dataset of ``path``, checked: DICOM, with pixel data a decoder here can read.

    Raises:
        InputError: not a DICOM file, no pixel data, a compression no installed package decodes.
    """
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"'{path}' is not a DICOM file pydicom can read{what}: give a .dcm file with pixel data "
                         "(or a PNG, JPEG or TIFF image)") from exc
    if "PixelData" not in ds:
        kinds = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        why = "holds float pixel data, which camanim does not read" if kinds else \
            "has no pixel data (a report, a structure set or a plan, not an image)"
        raise InputError(f"'{path}' {why}: give a DICOM image")
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is not None and syntax.is_compressed:
        from pydicom.pixels import get_decoder

        try:
            decoder = get_decoder(syntax)
        except NotImplementedError as exc:
            raise InputError(f"'{path}' is compressed as {syntax.name}, which pydicom cannot decode: "
                             "give an uncompressed copy (e.g. dcmdjpeg or gdcmconv --raw)") from exc
        if not decoder.is_available:
            raise InputError(f"'{path}' is compressed as {syntax.name} and no installed package decodes it: "
                             f"{_install_hint(decoder.missing_dependencies)}, then run again")
    return ds


def _decode_error(path: object, ds: Any, exc: BaseException) -> InputError:
    """Why pixel data did not decode: for a compressed file whose installed decoder cannot read it
    (Pillow and 12-bit JPEG), the packages that can; else a damaged file."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is not None and syntax.is_compressed:
        from pydicom.pixels import get_decoder

        try:
            missing = get_decoder(syntax).missing_dependencies
        except NotImplementedError:
            missing = []
        if missing:
            said = " ".join(str(exc).split())[:160] or type(exc).__name__
            return InputError(f"'{path}' is compressed as {syntax.name} and the installed decoder cannot read it "
                              f"({said}): {_install_hint(missing)}, then run again")
    return InputError(f"'{path}' has pixel data pydicom cannot decode ({type(exc).__name__}): "
                      "check the file, or give an uncompressed copy")


def _install_hint(missing: list[str]) -> str:
    """``pip install ...`` for the first plugin pydicom names as missing (pylibjpeg's preferred).

    pydicom says e.g. ``'pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1'``.
    """
    entries = sorted(missing, key=lambda m: not m.startswith("pylibjpeg"))
    hints = []
    for entry in entries:
        _, _, needs = entry.partition(" - requires ")
        packages = [p.strip() for p in needs.split(" and ") if p.strip() and p.strip() != "numpy"]
        if packages:
            hints.append("pip install " + " ".join(f"'{p}'" if any(c in p for c in "<>=") else p for p in packages))
    if not hints:
        return "install a pydicom pixel-data plugin (pylibjpeg, gdcm)"
    return hints[0] + (f" (or: {'; '.join(hints[1:])})" if len(hints) > 1 else "")


def _number(value: Any) -> float | None:
    """A finite float of a DICOM numeric value (first of a multi-value), else None."""
    try:
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = value[0]
        out = float(value)
    except (TypeError, ValueError, IndexError):
        return None
    return out if math.isfinite(out) else None


def _spacing(ds: Any) -> tuple[list[float] | None, str | None]:
    """(row, column) pixel spacing in mm and the tag it came from (PixelSpacing, else ImagerPixelSpacing)."""
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(key)
        if value is not None:
            try:
                pair = [float(v) for v in value]
            except (TypeError, ValueError):
                continue
            if len(pair) == 2 and all(math.isfinite(v) and v > 0 for v in pair):
                return [round(v, 6) for v in pair], key
    return None, None


def _code(value: Any) -> str | None:
    """A DICOM code string (``CT``, ``HU``) or None: free text never passes (it could identify someone)."""
    text = str(value).strip().upper() if value is not None else ""
    return text if _CODE.match(text) else None


def _technical(ds: Any) -> dict[str, Any]:
    """The whitelisted, non-identifying fields of ``ds`` (the module docstring says why a whitelist)."""
    modality = _code(ds.get("Modality"))
    spacing, spacing_tag = _spacing(ds)
    slope, intercept = _number(ds.get("RescaleSlope")), _number(ds.get("RescaleIntercept"))
    unit = _code(ds.get("RescaleType")) or ("HU" if modality == "CT" and "ModalityLUTSequence" not in ds else None)
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    return {
        "format": "DICOM",
        "modality": modality,
        "photometric": _code(ds.get("PhotometricInterpretation")),
        "bits_stored": int(ds.get("BitsStored") or ds.get("BitsAllocated") or 0) or None,
        "signed": bool(int(ds.get("PixelRepresentation") or 0)),
        "rescale": {"slope": 1.0 if slope is None else slope, "intercept": 0.0 if intercept is None else intercept,
                    "unit": unit, "lut": "ModalityLUTSequence" in ds},
        "pixel_spacing_mm": spacing,
        **({"pixel_spacing_tag": spacing_tag} if spacing_tag == "ImagerPixelSpacing" else {}),
        "transfer_syntax": syntax.name if syntax is not None else None,
    }


def _file_window(ds: Any) -> dict[str, Any] | None:
    """The file's first window (centre, width, function), or None when it has none."""
    centre, width = _number(ds.get("WindowCenter")), _number(ds.get("WindowWidth"))
    if centre is None or width is None:
        return None
    function = _code(ds.get("VOILUTFunction")) or "LINEAR"
    return {"centre": centre, "width": width, "function": function, "source": "file"}


def window_for(values: np.ndarray, ds: Any, window: tuple[float, float] | None) -> dict[str, Any]:
    """The window to show ``values`` with: ``window`` (``--window``), else the file's, else their range.

    Returns:
        ``{"centre", "width", "function", "source"}``, source ``--window``, ``file`` or ``value range``
        (LINEAR_EXACT from the lowest to the highest value).
    """
    if window is not None:
        function = _code(ds.get("VOILUTFunction")) if ds is not None else None
        return {"centre": float(window[0]), "width": float(window[1]),
                "function": function if function in _FUNCTIONS else "LINEAR", "source": "--window"}
    found = _file_window(ds) if ds is not None else None
    if found is not None:
        return found
    lo, hi = float(np.min(values)), float(np.max(values))
    return {"centre": (lo + hi) / 2.0, "width": max(hi - lo, 1e-6), "function": "LINEAR_EXACT",
            "source": "value range"}


def read_dicom(spec: str | Path, *, window: str | tuple[float, float] | None = None,
               frame: int | None = None) -> DicomImage:
    """Read one DICOM image: values through its Modality LUT, windowed into a [0, 1] grey image.

    Args:
        spec: a DICOM file, or ``sample:ct`` (pydicom's ``CT_small.dcm``, from the installed package).
        window: ``(centre, width)`` or ``"C,W"`` in the rescaled values' unit (Hounsfield units for
            CT), instead of the file's window; default the file's first window, else the values'
            range.
        frame: the frame of a multi-frame file, from 0 (default the first, with a logged warning).

    Returns:
        A :class:`DicomImage`. Its ``info`` (the manifest's ``image``) holds only non-identifying
        fields: ``source`` (as given), ``format``, ``modality``, ``photometric``, ``inverted``
        (MONOCHROME1), ``bits_stored``, ``signed``, ``rescale`` {slope, intercept, unit, lut},
        ``window`` {centre, width, function, source}, ``pixel_spacing_mm`` [row, column],
        ``frames``, ``frame``, ``transfer_syntax``, ``original_size`` [W, H] and ``value_range``.

    Raises:
        InputError: a missing file or a folder, not DICOM, no pixel data, a compression no installed
            package decodes, a frame out of range, a bad window, a colour model DICOM cannot window.
    """
    pydicom = _pydicom()
    text = str(spec)
    path = sample_path(text.split(":", 1)[1]) if text.startswith("sample:") else Path(text)
    if not path.exists():
        raise InputError(f"DICOM file '{path}' not found: give a .dcm file or sample:ct")
    if path.is_dir():
        raise InputError(f"'{path}' is a folder: give one DICOM file (a folder of slices is a 3-D series)")
    ds = _read(path, pydicom)
    frames = int(_number(ds.get("NumberOfFrames")) or 1)
    if frame is not None and (isinstance(frame, bool) or not 0 <= int(frame) < frames):
        raise InputError(f"--frame {frame} is out of range: '{path}' has {frames} frame(s), 0..{frames - 1}")
    if frame is None and frames > 1:
        logger.warning("'%s' has %d frames: explaining frame 0 (--frame N picks another)", path.name, frames)
    index = int(frame or 0)
    try:
        from pydicom.pixels import apply_modality_lut, pixel_array

        stored = pixel_array(ds, index=index) if frames > 1 else ds.pixel_array
        photometric = _code(ds.get("PhotometricInterpretation")) or "MONOCHROME2"
        colour = stored.ndim == 3
        values = stored.astype(np.float64) if colour else apply_modality_lut(stored, ds)
    except InputError:
        raise
    except Exception as exc:  # pydicom's decoders raise many kinds for a damaged file
        raise _decode_error(path, ds, exc) from exc
    info: dict[str, Any] = {"source": text, **_technical(ds)}
    window = parse_window(window)
    if colour:
        if window is not None:
            raise InputError(f"--window applies to grey (MONOCHROME) images; '{path}' is {photometric}: drop --window")
        top = float(2 ** int(info["bits_stored"] or 8) - 1)
        grey = np.clip(values / top, 0.0, 1.0).astype(np.float32)
        info.update(window=None, inverted=False)
        values = grey
    else:
        if photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise InputError(f"'{path}' is {photometric}, which camanim does not read: give a MONOCHROME or RGB image")
        chosen = window_for(values, ds, window)
        grey = apply_window(values, chosen)
        inverted = photometric == "MONOCHROME1"
        if inverted:  # MONOCHROME1: the lowest value is white
            grey = 1.0 - grey
        info.update(window={k: (round(v, 6) if isinstance(v, float) else v) for k, v in chosen.items()},
                    inverted=inverted)
    h, w = grey.shape[:2]
    info.update(frames=frames, frame=index, original_size=[int(w), int(h)],
                value_range=[round(float(np.min(values)), 6), round(float(np.max(values)), 6)])
    return DicomImage(values=np.asarray(values, dtype=np.float32), grey=np.ascontiguousarray(grey, dtype=np.float32),
                      info=info)


def _vector(ds: Any, keyword: str, length: int) -> np.ndarray | None:
    """A finite float64 vector of ``length`` values from a DICOM attribute, else None."""
    value = ds.get(keyword)
    try:
        out = np.array([float(v) for v in value], dtype=np.float64) if value is not None else None
    except (TypeError, ValueError):
        return None
    return out if out is not None and out.shape == (length,) and np.isfinite(out).all() else None


def _orientation(ds: Any) -> np.ndarray | None:
    return _vector(ds, "ImageOrientationPatient", 6)


def _position(ds: Any) -> np.ndarray | None:
    return _vector(ds, "ImagePositionPatient", 3)


def read_dicom_series(folder: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a folder of single-slice DICOM files as one volume, in rescaled values (not windowed).

    Slices are sorted along the slice normal (the cross product of ImageOrientationPatient's row and
    column directions) by ImagePositionPatient; without positions, by InstanceNumber. Files named
    ``DICOMDIR`` and hidden files are skipped.

    Args:
        folder: the series' folder.

    Returns:
        ``(volume, info)``: volume (D, H, W) float32 in the Modality LUT's unit (Hounsfield units for
        CT), slice 0 first along the normal; info the de-identified metadata: ``source``, ``format``
        (``DICOM series``), ``modality``, ``photometric``, ``invert_display`` (MONOCHROME1: show
        inverted), ``rescale``, ``window`` (the first slice's, else the volume's value range; apply
        it with :func:`apply_window`), ``spacing_mm`` [slice, row, column] (slice spacing from the
        positions, else SpacingBetweenSlices or SliceThickness: ``slice_spacing_from`` says which),
        ``slice_spacing_uniform``, ``sorted_by`` and ``slices``.

    Raises:
        InputError: a missing or empty folder, a file that is not a DICOM image, several series,
            slices of different sizes or orientations, a multi-frame file, two slices at one
            position, or slices without positions or instance numbers.
    """
    pydicom = _pydicom()
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"DICOM series folder '{root}' not found: give a folder of .dcm slices")
    files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".") and p.name != "DICOMDIR")
    if not files:
        raise InputError(f"DICOM series folder '{root}' is empty: give a folder of .dcm slices of one series")
    datasets = [(p, _read(p, pydicom, " (in a series folder, every file must be a slice)")) for p in files]
    first_path, first = datasets[0]
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in datasets}
    if len(series) > 1:
        raise InputError(f"'{root}' holds {len(series)} series: give a folder of one series "
                         "(the files' SeriesInstanceUID differ)")
    size = (int(first.Rows), int(first.Columns))
    for p, ds in datasets:
        if int(_number(ds.get("NumberOfFrames")) or 1) > 1:
            raise InputError(f"'{p}' is a multi-frame file in a series folder: give single-slice files, "
                             "or the multi-frame file on its own")
        if (int(ds.Rows), int(ds.Columns)) != size:
            raise InputError(f"slices of '{root}' differ in size: '{first_path.name}' is {size[0]}x{size[1]}, "
                             f"'{p.name}' {int(ds.Rows)}x{int(ds.Columns)}; give one series of one size")
    orientations = [_orientation(ds) for _, ds in datasets]
    positions = [_position(ds) for _, ds in datasets]
    spacing_from = None
    uniform = True
    if all(o is not None for o in orientations) and all(p is not None for p in positions):
        if any(not np.allclose(o, orientations[0], atol=1e-4) for o in orientations):
            raise InputError(f"slices of '{root}' have different orientations: give one series of parallel slices")
        normal = np.cross(orientations[0][:3], orientations[0][3:])
        keys = [float(np.dot(p, normal)) for p in positions]
        sorted_by = "ImagePositionPatient"
    else:
        numbers = [_number(ds.get("InstanceNumber")) for _, ds in datasets]
        if any(n is None for n in numbers):
            raise InputError(f"slices of '{root}' have neither ImagePositionPatient nor InstanceNumber: "
                             "camanim cannot order them")
        keys = [float(n) for n in numbers]
        sorted_by = "InstanceNumber"
    order = sorted(range(len(datasets)), key=lambda i: keys[i])
    steps = np.diff([keys[i] for i in order])
    if len(steps) and np.min(np.abs(steps)) < 1e-6:
        raise InputError(f"two slices of '{root}' lie at one {'position' if sorted_by.startswith('Image') else 'instance number'}: "
                         "give one series without duplicates")
    from pydicom.pixels import apply_modality_lut

    slices = []
    for i in order:
        p, ds = datasets[i]
        try:
            slices.append(np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float32))
        except Exception as exc:  # pydicom's decoders raise many kinds for a damaged file
            raise _decode_error(p, ds, exc) from exc
        if slices[-1].ndim != 2:
            raise InputError(f"'{p}' is a colour image: a series folder must hold grey (MONOCHROME) slices")
    volume = np.stack(slices)
    if sorted_by == "ImagePositionPatient" and len(steps):
        dz = float(np.median(steps))
        uniform = bool(np.max(np.abs(steps - dz)) <= 0.01 * abs(dz) + 1e-4)
        spacing_from = "ImagePositionPatient"
        if not uniform:
            logger.warning("slices of '%s' are not evenly spaced (%.4g to %.4g mm): spacing_mm uses the median",
                           root, float(np.min(steps)), float(np.max(steps)))
    else:
        dz = None
        for key in ("SpacingBetweenSlices", "SliceThickness"):
            dz = _number(first.get(key))
            if dz is not None and dz > 0:
                spacing_from = key
                break
            dz = None
    pixel, _ = _spacing(first)
    info: dict[str, Any] = {"source": str(root), **_technical(first), "format": "DICOM series"}
    photometric = info["photometric"]
    info.update(
        invert_display=photometric == "MONOCHROME1",
        window=window_for(volume, first, None),
        spacing_mm=[round(dz, 6) if dz is not None else None, *(pixel or [None, None])],
        slice_spacing_from=spacing_from, slice_spacing_uniform=uniform, sorted_by=sorted_by,
        slices=int(volume.shape[0]), original_size=[size[1], size[0]],
        value_range=[round(float(volume.min()), 6), round(float(volume.max()), 6)],
    )
    info.pop("pixel_spacing_mm", None)
    return volume, info
