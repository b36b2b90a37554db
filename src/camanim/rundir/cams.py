"""``cams.npz``: the raw CAMs of a run and what is needed to score them again without the model's pass."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError


@dataclass
class SavedCams:
    """The content of ``cams.npz``.

    Attributes:
        cams: raw CAMs (L, H, W) float32: after ReLU, upsampled to input size, not scaled.
        names: (L,) layer names, as in the manifest.
        input: the model input (1, C, H, W) float32, normalised as the model takes it.
        image: the display image (H, W, 3) uint8.
        target: the explained class index.
        vectors: per layer, a non-spatial layer's 1-D evidence (float32, see
            :mod:`camanim.compute.vectors`) or None; None as a whole for runs saved without them.
        vector_kind: what the vectors' values are (``"act x grad"`` or ``"activation"``).
    """

    cams: np.ndarray
    names: np.ndarray
    input: np.ndarray
    image: np.ndarray
    target: int
    vectors: list[np.ndarray | None] | None = None
    vector_kind: str = ""


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


def write_cams(path: Path, saved: SavedCams) -> Path:
    """Write ``saved`` as ``cams.npz`` (uncompressed: a run's CAMs are read back whole).

    Non-spatial layers' vectors, when kept, go in as ``vector_values`` (all concatenated),
    ``vector_offsets`` (L + 1) and ``vector_has`` (L,), with ``vector_kind``.
    """
    extra = {} if saved.vectors is None else {**_pack_vectors(saved.vectors),
                                              "vector_kind": np.array(saved.vector_kind)}
    np.savez(path, cams=saved.cams, names=saved.names, input=saved.input, image=saved.image,
             target=np.array(saved.target), **extra)
    return Path(path)


def read_cams(path: Path) -> SavedCams:
    """Read a run's ``cams.npz``.

    Raises:
        InputError: the file is missing, unreadable or lacks one of its arrays.
    """
    try:
        with np.load(path) as data:
            return SavedCams(cams=data["cams"], names=data["names"], input=data["input"], image=data["image"],
                             target=int(data["target"]), vectors=_unpack_vectors(data),
                             vector_kind=str(data["vector_kind"]) if "vector_kind" in data else "")
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{path} is not a readable camanim cams.npz ({exc}): re-run `camanim run`") from exc
