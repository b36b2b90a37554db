"""Small finished runs for the figure tests: random-weight resnet18 (two methods, one scored with
ROAD) and a shallower random-weight mobilenet_v3_small, each a few layers with a non-spatial one."""

from __future__ import annotations

from pathlib import Path

import pytest

from camanim.cli import main

#: resnet18: 7 layers, the last (fc) non-spatial; avgpool's output is (1, 512, 1, 1), spatial 1x1.
RESNET_LAYERS = r"re:^(conv1|layer1\.0\.conv1|layer2\.0\.conv1|layer3\.0\.conv1|layer4\.0\.conv1|layer4\.1\.conv2|fc)$"
#: mobilenet_v3_small: 4 layers, the last (classifier.3) non-spatial.
MOBILENET_LAYERS = r"re:^(features\.0|features\.4|features\.12|classifier\.3)$"


def make_run(out: Path, *extra: str, model: str = "resnet18", layers: str = RESNET_LAYERS,
             method: str = "gradcam") -> Path:
    """A finished run of a random-weight ``model`` on sample:cat in ``out``."""
    assert main(["run", "sample:cat", "--model", model, "--weights", "none", "--layers", layers, "--method", method,
                 "--frame-width", "64", "--no-video", "--out", str(out), "--quiet", *extra]) == 0
    return out


@pytest.fixture(scope="session")
def figure_runs(tmp_path_factory) -> dict[str, Path]:
    """``gradcam`` (scored with ROAD), ``hirescam`` (same model and layers), ``mobilenet`` (another model)."""
    root = tmp_path_factory.mktemp("figure-runs")
    return {
        "gradcam": make_run(root / "gradcam", "--road", "--road-percentiles", "50"),
        "hirescam": make_run(root / "hirescam", method="hirescam"),
        "mobilenet": make_run(root / "mobilenet", model="mobilenet_v3_small", layers=MOBILENET_LAYERS),
    }
