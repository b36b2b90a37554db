"""``manifest.json``: the schema as written, read back; a broken manifest is a clear error."""

from __future__ import annotations

import pytest

from camanim import InputError
from camanim.rundir import read_manifest, run_manifest, with_outputs, with_ybroad, write_manifest


def test_manifest_schema_round_trip(tmp_path):
    m = run_manifest(model={"name": "m"}, image={"source": "sample:cat"}, size=(224, 224), method="gradcam",
                     target={"index": 1, "label": None, "score": 0.5}, versions={"camanim": "0"},
                     seconds={"cams": 0.123456}, options={"seed": 0}, layers=[{"index": 0, "name": "conv"}])
    with_outputs(m, normalisations=["local", "global"], fps=10, count=1, videos={"local": "camanim_local.mp4"},
                 render={"fps": 10})
    with_ybroad(m, {"mean": 0.1})
    write_manifest(tmp_path, m)
    back = read_manifest(tmp_path)
    assert back == m
    assert list(back) == ["model", "image", "method", "target", "versions", "seconds", "options", "layers",
                          "normalisations", "fps", "frames", "videos", "render", "ybroad"]
    assert back["image"]["size"] == [224, 224] and back["seconds"] == {"cams": 0.1235}
    assert back["frames"] == {"local": "frames/local", "global": "frames/global", "count": 1}
    assert back["ybroad"] == {"csv": "ybroad.csv", "json": "ybroad.json", "png": "ybroad.png", "mean": 0.1}


def test_reading_a_missing_or_broken_manifest_names_the_folder(tmp_path):
    with pytest.raises(InputError, match="no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="not a camanim manifest"):
        read_manifest(tmp_path)
