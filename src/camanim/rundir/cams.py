"""``cams.npz``: the raw CAMs of a run and what is needed to score them again without the model's pass.

The CAMs are kept at **layer resolution** with the rule that upsamples them, so the file is a
fraction of the input-size stack (:func:`load_cams` rebuilds that stack, equal to the run's
``CamResult.cams`` to float32 rounding). Keys, all plain numpy arrays (``np.load`` reads them):

=================  =================================================================================
``names``          (L,) layer names, as in the manifest
``input``          the model input (1, C, H, W) float32 ((1, C, D, H, W) for a volume)
``image``          the display image (H, W, 3) uint8
``target``         () int: the explained class
``size``           (2,) or (3,) int64: the CAMs' size at input resolution, (H, W) or (D, H, W)
``upsample``       () str: ``bilinear`` (2-D) or ``trilinear`` (volumes); both with pixel centres
                   aligned, as ``F.interpolate(..., align_corners=False)`` and ``cv2.resize``
``map_values``     float32, every distinct layer map flattened (C order) and concatenated
``map_start``      (L,) int64: where layer i's map starts in ``map_values``; -1 for a layer without a
                   map (non-spatial: its CAM is zeros). Layers sharing one output share one start.
``map_shape``      (L, 2) or (L, 3) int64: layer i's map shape, (h, w) or (d, h, w)
``cams``           only where the CAMs are not an upsampling of layer maps (``--aug-smooth``, whose
                   maps are scaled and averaged at input size; and files written before the layer maps were kept):
                   the raw CAMs (L, H, W) float32 themselves, instead of the ``map_*`` keys
``vector_values``, ``vector_offsets`` (L + 1), ``vector_has`` (L,), ``vector_kind``: non-spatial
                   layers' 1-D evidence (see :func:`write_cams`)
=================  =================================================================================

Layer i's CAM is ``map_values[map_start[i]:][:prod(map_shape[i])].reshape(map_shape[i])`` resized to
``size`` by ``upsample`` (zeros where ``map_start[i] == -1``).
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..compute.maps import upsample, upsample_volumes
from ..errors import InputError
from . import names

#: the upsampling rules ``cams.npz`` names, by the number of spatial dimensions
UPSAMPLE_RULES = {2: "bilinear", 3: "trilinear"}


@dataclass
class SavedCams:
    """The content of ``cams.npz``.

    Attributes:
        cams: raw CAMs (L, H, W) float32 ((L, D, H, W) for a volume): after ReLU, upsampled to input
            size, not scaled. When writing, None is allowed where :attr:`maps` is given.
        names: (L,) layer names, as in the manifest.
        input: the model input (1, C, H, W) float32, normalised as the model takes it.
        image: the display image (H, W, 3) uint8.
        target: the explained class index.
        vectors: per layer, a non-spatial layer's 1-D evidence (float32, see
            :mod:`camanim.compute.vectors`) or None; None as a whole for runs saved without them.
        vector_kind: what the vectors' values are (``"act x grad"`` or ``"activation"``).
        maps: per layer, its CAM at layer resolution (h, w) or (d, h, w) float32, None for zeros;
            :attr:`cams` is their upsampling to :attr:`size`. None: the file holds :attr:`cams` whole.
            Layers that share one output may share one array object (written once).
        size: the input size (H, W) or (D, H, W) the maps are upsampled to (needed with :attr:`maps`).
    """

    cams: np.ndarray | None
    names: np.ndarray
    input: np.ndarray
    image: np.ndarray
    target: int
    vectors: list[np.ndarray | None] | None = None
    vector_kind: str = ""
    maps: list[np.ndarray | None] | None = None
    size: tuple[int, ...] | None = None


def _pack_vectors(vectors: list[np.ndarray | None]) -> dict[str, np.ndarray]:
    """Ragged per-layer vectors as three flat arrays: values, (L + 1) offsets, and which layers have one."""
    sizes = [0 if v is None else int(np.asarray(v).size) for v in vectors]
    values = [np.asarray(v, np.float32).ravel() for v in vectors if v is not None]
    return {"vector_values": np.concatenate(values) if values else np.zeros(0, np.float32),
            "vector_offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            "vector_has": np.array([v is not None for v in vectors], bool)}


def _unpack_vectors(data) -> list[np.ndarray | None] | None:
    if "vector_values" not in data:
        return None
    values, offsets, has = data["vector_values"], data["vector_offsets"], data["vector_has"]
    return [values[offsets[i]:offsets[i + 1]].copy() if has[i] else None for i in range(len(has))]


def _pack_maps(maps: list[np.ndarray | None], size: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Layer maps as ``map_values``, ``map_start``, ``map_shape`` (one copy of a map several layers share)."""
    dims = len(size)
    if dims not in UPSAMPLE_RULES:
        raise ValueError(f"cams of size {size}: 2-D (H, W) or 3-D (D, H, W) only")
    starts, shapes, values, where, offset = [], [], [], {}, 0
    for m in maps:
        if m is None:
            starts.append(-1)
            shapes.append((0,) * dims)
            continue
        if m.ndim != dims:
            raise ValueError(f"a layer map of shape {m.shape} for cams of size {size}")
        if id(m) not in where:
            where[id(m)] = offset
            values.append(np.ascontiguousarray(m, np.float32).ravel())
            offset += m.size
        starts.append(where[id(m)])
        shapes.append(m.shape)
    return {"size": np.array(size, np.int64), "upsample": np.array(UPSAMPLE_RULES[dims]),
            "map_values": np.concatenate(values) if values else np.zeros(0, np.float32),
            "map_start": np.array(starts, np.int64), "map_shape": np.array(shapes, np.int64).reshape(len(maps), dims)}


def _unpack_maps(data) -> tuple[list[np.ndarray | None], tuple[int, ...]]:
    values, starts, shapes = data["map_values"], data["map_start"], data["map_shape"]
    size = tuple(int(s) for s in data["size"])
    rule = str(data["upsample"])
    if UPSAMPLE_RULES.get(len(size)) != rule:
        raise ValueError(f"upsample rule {rule!r} for size {size}")
    maps: list[np.ndarray | None] = []
    for start, shape in zip(starts, shapes):
        n = int(np.prod(shape))
        maps.append(None if start < 0 else values[int(start):int(start) + n].reshape(tuple(int(s) for s in shape)))
    return maps, size


def upsampled(maps: list[np.ndarray | None], size: tuple[int, ...]) -> np.ndarray:
    """Layer maps upsampled to ``size``: (L, H, W) bilinear or (L, D, H, W) trilinear float32, zeros for None.

    The very rule the engine applies (:func:`camanim.compute.maps.upsample`, ``upsample_volumes``).
    """
    tensors = [None if m is None else torch.from_numpy(np.ascontiguousarray(m, np.float32))[None] for m in maps]
    if len(size) == 3:
        out = upsample_volumes(tensors, size)  # type: ignore[arg-type]
    else:
        out = upsample(tensors, size)  # type: ignore[arg-type]
    return out[:, 0].numpy()


def write_cams(path: Path, saved: SavedCams) -> Path:
    """Write ``saved`` as ``cams.npz`` (uncompressed: a run's CAMs are read back whole).

    With :attr:`SavedCams.maps`, the layer maps and their upsampling rule (``size``, ``upsample``,
    ``map_*``); without, the CAMs whole (``cams``). Non-spatial layers' vectors, when kept, go in as
    ``vector_values`` (all concatenated), ``vector_offsets`` (L + 1) and ``vector_has`` (L,), with
    ``vector_kind``. The module docstring lists every key.

    Raises:
        ValueError: neither maps nor CAMs, maps without a size, or maps of another rank than the size.
    """
    extra = {} if saved.vectors is None else {**_pack_vectors(saved.vectors),
                                              "vector_kind": np.array(saved.vector_kind)}
    if saved.maps is not None:
        if saved.size is None:
            raise ValueError("layer maps need the size they are upsampled to")
        extra.update(_pack_maps(saved.maps, tuple(int(s) for s in saved.size)))
    elif saved.cams is not None:
        extra["cams"] = saved.cams
    else:
        raise ValueError("nothing to write: neither CAMs nor layer maps")
    np.savez(path, names=saved.names, input=saved.input, image=saved.image, target=np.array(saved.target), **extra)
    return Path(path)


def _opened(path: Path) -> Any:
    """``np.load(path)`` when it is an ``.npz`` archive (a context manager); ValueError for anything else."""
    data = np.load(path)
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError("a single numpy array (.npy), not an .npz archive")
    return data


_NEEDED = ("names", "input", "image", "target")
_MAPS = ("map_values", "map_start", "map_shape", "size", "upsample")


def _checked(data: Any) -> None:
    """Raise ValueError/KeyError where the arrays of a ``cams.npz`` do not fit together."""
    whole = "cams" in data
    for key in _NEEDED + (() if whole else _MAPS):
        if key not in data:
            raise KeyError(key)
    if data["names"].ndim != 1:
        raise ValueError(f"names of shape {tuple(data['names'].shape)}, not a list")
    n = len(data["names"])
    if data["target"].size != 1:
        raise ValueError(f"target holds {data['target'].size} numbers, not one")
    if whole:
        if len(data["cams"]) != n:
            raise ValueError(f"{len(data['cams'])} CAMs for {n} layer names")
        size = tuple(data["cams"].shape[1:])
    else:
        if data["size"].ndim != 1 or len(data["size"]) not in UPSAMPLE_RULES:
            raise ValueError(f"size of shape {tuple(data['size'].shape)}, not (H, W) or (D, H, W)")
        size = tuple(int(v) for v in data["size"])
        starts, shapes, values = data["map_start"], data["map_shape"], data["map_values"]
        if len(starts) != n or len(shapes) != n:
            raise ValueError(f"{len(starts)} map entries for {n} layer names")
        if shapes.ndim != 2 or shapes.shape[1] != len(size):
            raise ValueError(f"map shapes {tuple(shapes.shape)} for a {len(size)}-D size")
        ends = starts + np.prod(shapes, axis=1)
        if ((starts >= 0) & ((ends > len(values)) | (shapes <= 0).any(axis=1))).any():
            raise ValueError("a layer map reaches past map_values")
    if tuple(data["input"].shape[2:]) != size:
        raise ValueError(f"an input of size {tuple(data['input'].shape[2:])} for CAMs of size {size}")
    if "vector_values" in data:
        for key in ("vector_offsets", "vector_has"):
            if key not in data:
                raise KeyError(key)
        offsets, has = data["vector_offsets"], data["vector_has"]
        if (len(has) != n or len(offsets) != n + 1 or (np.diff(offsets) < 0).any()
                or offsets[-1] > len(data["vector_values"])):
            raise ValueError("the non-spatial vectors' offsets do not fit their values")


def read_cams(path: Path) -> SavedCams:
    """Read a run's ``cams.npz``; its CAMs at input size (upsampled from the layer maps, or as stored).

    Raises:
        InputError: the file is missing, a folder, unreadable (cut short, damaged, not an ``.npz``
            archive), lacks one of its arrays, or holds arrays that do not fit together.
    """
    if Path(path).is_dir():
        raise InputError(f"{path} is a folder, not a file: give a run folder or its cams.npz file")
    try:
        with _opened(path) as data:
            _checked(data)
            if "cams" in data:
                cams, maps, size = data["cams"], None, None
            else:
                maps, size = _unpack_maps(data)
                cams = upsampled(maps, size)
            return SavedCams(cams=cams, names=data["names"], input=data["input"], image=data["image"],
                             target=int(data["target"]), vectors=_unpack_vectors(data),
                             vector_kind=str(data["vector_kind"]) if "vector_kind" in data else "",
                             maps=maps, size=size)
    except _READ_ERRORS as exc:
        raise _unreadable(path, exc) from exc


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_run_cams(folder: Path, manifest: Mapping[str, Any]) -> SavedCams:
    """A run folder's ``cams.npz`` (:func:`read_cams`), checked to be the one the run wrote (as :func:`check_run_cams`).

    Raises:
        InputError: see :func:`check_run_cams` and :func:`read_cams`.
    """
    path = _cams_of(folder)
    saved = read_cams(path)
    _same_run(Path(folder), manifest, [str(n) for n in saved.names], saved.target)
    return saved


def check_run_cams(folder: Path, manifest: Mapping[str, Any]) -> None:
    """Whether a run folder's ``cams.npz`` is the one the run wrote, without reading its maps.

    Args:
        folder: the run folder.
        manifest: its ``manifest.json``: the file's SHA-256 must be its ``cams_sha256`` (runs saved
            before it was recorded: the layer names and the target must be its ``layers`` and ``target``).

    Raises:
        InputError: the file is missing or unreadable, or it is another run's (another checksum, other
            layers or another target).
    """
    path = _cams_of(folder)
    try:
        with _opened(path) as data:
            _checked(data)
            held, target = [str(n) for n in data["names"]], int(data["target"])
    except _READ_ERRORS as exc:
        raise _unreadable(path, exc) from exc
    _same_run(Path(folder), manifest, held, target)


def _cams_of(folder: Path) -> Path:
    path = Path(folder) / names.CAMS
    if not path.is_file():
        raise InputError(f"'{folder}' is not a camanim run folder (no cams.npz file): give the --out of a run")
    return path


def _same_run(folder: Path, manifest: Mapping[str, Any], held: list[str], target: int) -> None:
    """Refuse a readable ``cams.npz`` of another run: another checksum than the manifest's ``cams_sha256``,
    or (runs saved before it) other layer names or another target."""
    path, mpath = folder / names.CAMS, folder / names.MANIFEST
    want = manifest.get("cams_sha256")
    if isinstance(want, str) and file_sha256(path) != want:
        raise InputError(f"{path} is not the file this run wrote (its SHA-256 differs from manifest.json's "
                         "cams_sha256: changed since, or written by another run): re-run `camanim run`")
    listed = [str(layer.get("name", "")) if isinstance(layer, Mapping) else "" for layer in manifest.get("layers", [])]
    what = ""
    if len(held) != len(listed):
        what = (f"holds the CAMs of {len(held)} layer{'s' if len(held) != 1 else ''} but {mpath} lists "
                f"{len(listed)}")
    elif held != listed:
        i = next(k for k, (a, b) in enumerate(zip(held, listed)) if a != b)
        what = f"names layer {i + 1} (counting from 1) '{held[i]}' where {mpath} lists '{listed[i]}'"
    else:
        want = manifest.get("target", {}).get("index") if isinstance(manifest.get("target"), Mapping) else None
        if isinstance(want, int) and want != target:
            what = f"explains class {target} where {mpath}'s target is class {want}"
    if what:
        raise InputError(f"{path} {what}: they come from different runs; re-run `camanim run`")


#: what reading a damaged or odd ``cams.npz`` raises (:func:`_unreadable` says it in one line)
_READ_ERRORS = (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile)


def _unreadable(path: Path, exc: BaseException) -> InputError:
    return InputError(f"{path} is not a readable camanim cams.npz ({_why(exc)}): re-run `camanim run` to write it again")


def _why(exc: BaseException) -> str:
    """What is wrong with an unreadable ``cams.npz``, in a few words (not numpy's advice to unpickle it)."""
    if isinstance(exc, EOFError):
        return "empty or cut short"
    if isinstance(exc, zipfile.BadZipFile):
        return "damaged: " + str(exc).rstrip(".") if "CRC" in str(exc) else "not a complete .npz archive"
    if isinstance(exc, ValueError) and "pickle" in str(exc):
        return "not an .npz archive"
    if isinstance(exc, KeyError):
        key = str(exc.args[0]) if exc.args else ""
        return f"no array '{key.split(' is not a file')[0]}'"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def load_cams(path: str | Path) -> np.ndarray:
    """A run's raw CAMs (L, H, W) float32 ((L, D, H, W) for a volume), as ``CamResult.cams`` held them.

    Args:
        path: ``cams.npz``, or the run folder that holds it.

    Returns:
        After ReLU, at input size, not scaled: upsampled from the file's layer maps by its rule
        (equal to the run's in-memory CAMs to float32 rounding), or the stored CAMs of a file that
        holds them whole.

    Raises:
        InputError: no such file, or not a readable ``cams.npz``.
    """
    path = Path(path)
    if path.is_dir() and (path.name != names.CAMS or (path / names.CAMS).exists()):
        path = path / names.CAMS
    if not path.exists():
        raise InputError(f"{path} does not exist: give a run folder or its cams.npz (`camanim run --out DIR`)")
    cams = read_cams(path).cams
    assert cams is not None
    return cams
