"""``cams.npz``: written and read back bit for bit; a broken file is a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from camanim import InputError
from camanim.rundir import SavedCams, read_cams, write_cams


def test_cams_round_trip_bit_for_bit(tmp_path):
    rng = np.random.default_rng(0)
    saved = SavedCams(cams=rng.random((3, 8, 8), dtype=np.float32), names=np.array(["a", "b", "b#2"]),
                      input=rng.standard_normal((1, 3, 8, 8)).astype(np.float32),
                      image=rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), target=281)
    back = read_cams(write_cams(tmp_path / "cams.npz", saved))
    for key in ("cams", "names", "input", "image"):
        assert getattr(back, key).tobytes() == getattr(saved, key).tobytes()
        assert getattr(back, key).dtype == getattr(saved, key).dtype
    assert back.target == 281


def test_a_cams_file_without_its_arrays_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "cams.npz", cams=np.zeros((1, 2, 2)))
    with pytest.raises(InputError, match="re-run `camanim run`"):
        read_cams(tmp_path / "cams.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(InputError, match="junk.npz"):
        read_cams(tmp_path / "junk.npz")


def test_non_spatial_vectors_round_trip_and_old_files_have_none(tmp_path):
    rng = np.random.default_rng(1)
    vectors = [None, rng.standard_normal(5).astype(np.float32), None, rng.standard_normal(1000).astype(np.float32)]
    saved = SavedCams(cams=np.zeros((4, 2, 2), np.float32), names=np.array(["a", "b", "c", "d"]),
                      input=np.zeros((1, 3, 2, 2), np.float32), image=np.zeros((2, 2, 3), np.uint8), target=1,
                      vectors=vectors, vector_kind="act x grad")
    back = read_cams(write_cams(tmp_path / "cams.npz", saved))
    assert back.vector_kind == "act x grad"
    assert [v is None for v in back.vectors] == [True, False, True, False]
    assert back.vectors[1].tobytes() == vectors[1].tobytes() and back.vectors[3].tobytes() == vectors[3].tobytes()
    saved.vectors = None
    back = read_cams(write_cams(tmp_path / "old.npz", saved))
    assert back.vectors is None and back.vector_kind == ""
