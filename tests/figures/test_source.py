"""A run folder as a figure reads it: manifest, CAMs, image, vectors; the folder errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from camanim import InputError
from camanim.figures import read_run, read_runs
from camanim.rundir import read_cams, set_manifest, write_cams, write_manifest


def test_a_run_folder_is_read_with_its_render_settings_and_vectors(figure_runs):
    run = read_run(figure_runs["gradcam"])
    assert (run.model_name, run.method, run.image_source) == ("resnet18", "gradcam", "sample:cat")
    assert (run.colormap, run.alpha) == ("jet", 0.5)
    assert run.cams.shape == (7, 224, 224) and run.image.shape == (224, 224, 3)
    assert [run.non_spatial(i) for i in range(7)] == [False] * 6 + [True]
    assert run.vectors is not None and [v is None for v in run.vectors] == [True] * 6 + [False]
    assert run.vector_kind == "act x grad"
    local = run.normalised("local")
    assert local.dtype == np.float32 and local.reshape(7, -1)[:6].max(1).tolist() == [1.0] * 6


def test_folders_that_are_not_one_finished_run(figure_runs, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_run(tmp_path / "nope")
    broken = tmp_path / "broken"
    shutil.copytree(figure_runs["gradcam"], broken)
    (broken / "cams.npz").unlink()
    with pytest.raises(InputError, match="cams.npz"):
        read_run(broken)
    top = tmp_path / "set"
    shutil.copytree(figure_runs["gradcam"], top / "gradcam")
    shutil.copytree(figure_runs["hirescam"], top / "hirescam")
    write_manifest(top, set_manifest([{"folder": "hirescam"}, {"folder": "gradcam"}], model={}, methods=[],
                                     options={}, versions={}, grids=[]))
    with pytest.raises(InputError, match="holds several runs"):
        read_run(top)
    assert [r.method for r in read_runs([top, figure_runs["gradcam"]])] == ["hirescam", "gradcam", "gradcam"]
    stale = tmp_path / "stale"
    shutil.copytree(figure_runs["gradcam"], stale)
    saved = read_cams(stale / "cams.npz")
    saved.cams, saved.maps, saved.names = saved.cams[:5], None, saved.names[:5]  # a file of another run
    saved.vectors = None if saved.vectors is None else saved.vectors[:5]
    write_cams(stale / "cams.npz", saved)
    with pytest.raises(InputError, match=r"cams.npz (is not the file this run wrote|holds the CAMs of 5 layers but)"):
        read_run(stale)  # another run's file: its checksum, or (runs saved before it) its layers differ


def test_a_volume_run_is_refused_in_one_line(tmp_path, capsys):
    """`camanim figure` on a run of a 3-D network: figures are 2-D only, exit 2, one line, nothing written."""
    from conftest import tiny_net3d, tiny_volume

    import camanim
    from camanim.cli import main

    camanim.animate(tiny_net3d(), tiny_volume(), layers="conv*").save(tmp_path / "run", video=False, report=False)
    capsys.readouterr()
    assert main(["figure", str(tmp_path / "run"), "--out", str(tmp_path / "fig.pdf")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "figures are drawn for 2-D images only" in err[0]
    assert not (tmp_path / "fig.pdf").exists() and not (tmp_path / "fig.png").exists()
