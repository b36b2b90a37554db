"""``--aug-smooth``, ``--eigen-smooth`` and ``--score softmax`` from the command line.

Each CLI run saves the very CAMs the Python API computes with the same options (cams.npz against
:func:`camanim.animate`), its manifest records the options, and the options change the CAMs (so
the comparison is not of two plain runs).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import small_net
from PIL import Image

import camanim
from camanim.cli import main
from camanim.results import CamSet
from camanim.sources import LoadedModel, Preprocess, register_builtin

MODEL = "test-cli-methods-smallnet"
LAYERS = "features.*"


@register_builtin(MODEL)
def _smallnet(weights, num_classes) -> LoadedModel:
    return LoadedModel(small_net(), Preprocess(resize=24, crop=(20, 20)), ["ant", "bee", "cat", "dog", "eel"],
                       {"name": MODEL, "weights": "random (seed 0)", "num_classes": 5})


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (30, 34, 3), dtype=np.uint8)).save(path)
    return str(path)


def _by_folder(res) -> dict[str, camanim.CamResult]:
    return res.by_folder() if isinstance(res, CamSet) else {".": res}


# (CLI flags, the same options for the API, methods, what every run's manifest must record)
CASES = [
    (["--aug-smooth"], {"aug_smooth": True}, "gradcam",
     {"aug_smooth": True, "eigen_smooth": False, "score": "logit", "traced_passes": 6}),
    (["--eigen-smooth"], {"eigen_smooth": True}, "gradcam++",
     {"aug_smooth": False, "eigen_smooth": True, "score": "logit", "traced_passes": 1}),
    (["--score", "softmax"], {"score": "softmax"}, "gradcam,scorecam",
     {"aug_smooth": False, "eigen_smooth": False, "score": "softmax", "traced_passes": 1}),
    (["--aug-smooth", "--eigen-smooth", "--score", "softmax"], {"aug_smooth": True, "eigen_smooth": True,
                                                                 "score": "softmax"}, "layercam",
     {"aug_smooth": True, "eigen_smooth": True, "score": "softmax", "traced_passes": 6}),
]


@pytest.mark.parametrize(("flags", "options", "method", "recorded"), CASES,
                         ids=["aug-smooth", "eigen-smooth", "softmax", "all-three"])
def test_cli_smoothing_and_score_options_save_the_apis_cams(tmp_path, photo, flags, options, method, recorded):
    out = tmp_path / "out"
    assert main(["run", photo, "--model", MODEL, "--layers", LAYERS, "--method", method, "--no-video",
                 "--norm", "local", "--quiet", "--out", str(out), *flags]) == 0
    api = _by_folder(camanim.animate(MODEL, photo, method=method, layers=LAYERS, **options))
    plain = _by_folder(camanim.animate(MODEL, photo, method=method, layers=LAYERS))
    assert list(api) == (["."] if "," not in method else method.split(","))
    for folder, res in api.items():
        saved = np.load(out / folder / "cams.npz")
        manifest = json.loads((out / folder / "manifest.json").read_text())
        assert list(saved["names"]) == [r.name for r in res.layers]
        assert int(saved["target"]) == manifest["target"]["index"] == res.target.index
        np.testing.assert_allclose(camanim.load_cams(out / folder), res.cams.numpy(), rtol=1e-5, atol=1e-7,
                                   err_msg=f"{flags} {folder}")
        assert manifest["method"] == res.method
        assert {k: manifest["options"][k] for k in recorded} == recorded
        assert {k: res.options[k] for k in recorded} == recorded
        assert manifest["target"]["score"] == pytest.approx(res.target.score, abs=1e-6)
        assert not np.allclose(camanim.load_cams(out / folder), plain[folder].cams.numpy(), rtol=1e-3, atol=1e-6), (
            f"{flags} did not change {folder}'s CAMs")
    if "," in method:
        top = json.loads((out / "manifest.json").read_text())
        assert top["kind"] == "set" and top["methods"] == method.split(",")
        assert {k: top["options"][k] for k in recorded} == recorded
