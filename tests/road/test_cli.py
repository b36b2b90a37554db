"""ybROAD wired into runs: `camanim run --road`, `camanim road OUT_DIR`, `camanim.ybroad(result)`."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import camanim
from camanim.cli import main


@pytest.fixture(scope="module")
def road_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("road") / "out"
    args = ["sample:cat", "--model", "resnet18", "--weights", "none", "--layers", "layer4.1*", "--road",
            "--road-percentiles", "20,60", "--out", str(out), "--no-video", "--frame-width", "64", "--quiet"]
    assert main(args) == 0
    return out


def test_run_with_road_writes_and_links_ybroad(road_run):
    m = json.loads((road_run / "manifest.json").read_text())
    assert m["ybroad"]["csv"] == "ybroad.csv" and m["ybroad"]["percentiles"] == [20.0, 60.0]
    rows = list(csv.DictReader((road_run / "ybroad.csv").open()))
    assert [r["name"] for r in rows] == [layer["name"] for layer in m["layers"]]
    assert set(rows[0]) >= {"morf_20", "lerf_20", "combined_20", "morf_60", "combined_60", "ybroad"}
    yb = json.loads((road_run / "ybroad.json").read_text())
    curve = np.array([np.nan if r["ybroad"] is None else r["ybroad"] for r in yb["layers"]])
    best = yb["ybroad_max"]
    assert best["value"] == pytest.approx(np.nanmax(curve)) and m["ybroad"]["max"]["index"] == best["index"]
    assert yb["ybroad_mean"] == pytest.approx(np.nanmean(curve))
    # combined = (LeRF - MoRF) / 2 per percentage, and the layer score is their mean
    r = rows[0]
    for p in ("20", "60"):
        assert float(r[f"combined_{p}"]) == pytest.approx((float(r[f"lerf_{p}"]) - float(r[f"morf_{p}"])) / 2)
    assert float(r["ybroad"]) == pytest.approx((float(r["combined_20"]) + float(r["combined_60"])) / 2)
    # the non-spatial layers are not scored (the selection has none here: all defined)
    assert all(row["defined"] == "True" for row in rows)
    assert "ybROAD" in (road_run / "report.html").read_text()


def test_road_run_states_its_best_layer_with_intervals_and_a_baseline(road_run):
    """The default trials give every layer an interval and a chance band; the best candidate is stated;
    a star only where no warning is (this seeded resnet18 gives its target 1.2%, above 2/1000)."""
    yb = json.loads((road_run / "ybroad.json").read_text())
    assert yb["trials"] == camanim.road.DEFAULT_TRIALS == 3
    assert yb["target"]["probability"] == pytest.approx(0.011628, abs=1e-5) and yb["target"]["num_classes"] == 1000
    assert not any(w.startswith("low confidence") for w in yb["warnings"])
    assert all(layer["ybroad_ci"] is not None for layer in yb["layers"] if layer["defined"])
    assert len(yb["baseline"]["band"]) == 2 and yb["baseline"]["band"][0] < yb["baseline"]["band"][1]
    best = yb["best"]
    assert best["name"] == yb["ybroad_max"]["name"] and best["ci"][0] <= best["ybroad"] <= best["ci"][1]
    assert yb["candidates"][0] == {k: best[k] for k in yb["candidates"][0]}
    assert best["separable_from_baseline"] is (best["ci"][0] > yb["baseline"]["band"][1])
    assert yb["statement"].startswith(f"best layer {best['index'] + 1} ({best['name']}): ybROAD")
    report = (road_run / "report.html").read_text()
    assert ("★ best ybROAD" in report) == (not yb["warnings"])
    assert yb["statement"][1:] in report
    m = json.loads((road_run / "manifest.json").read_text())
    assert m["ybroad"]["warnings"] == yb["warnings"] and m["ybroad"]["statement"] == yb["statement"]


def test_road_subcommand_rescores_from_saved_cams_reproducibly(road_run, capsys):
    before = json.loads((road_run / "ybroad.json").read_text())
    assert main(["road", str(road_run), "--road-percentiles", "20,60", "--quiet"]) == 0
    assert "ybROAD_max" in capsys.readouterr().out
    after = json.loads((road_run / "ybroad.json").read_text())
    # same seed, same saved CAMs, same seeded random weights: the same scores
    assert [x["ybroad"] for x in after["layers"]] == pytest.approx([x["ybroad"] for x in before["layers"]])
    assert main(["road", str(road_run), "--road-trials", "2", "--road-percentiles", "40", "--quiet"]) == 0
    two = json.loads((road_run / "ybroad.json").read_text())
    assert two["trials"] == 2 and all(x["ybroad_std"] is not None for x in two["layers"])


def test_road_bad_input(tmp_path, capsys):
    assert main(["road", str(tmp_path)]) == 2
    assert "not a camanim run folder" in capsys.readouterr().err
    assert main(["--road", "--road-percentiles", "0,120", "--out", str(tmp_path / "o")]) == 2
    assert "--road-percentiles" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_python_ybroad_of_a_result(tiny):
    result = camanim.animate(tiny, torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)))
    yb = camanim.ybroad(result, percentiles=(50,), score="logit", noise=0.0)
    assert yb.layer_names == [r.name for r in result.layers]
    defined = yb.defined.tolist()
    assert defined == [not r.non_spatial and float(result.cams[i].max()) > float(result.cams[i].min())
                       for i, r in enumerate(result.layers)]
    assert torch.isfinite(yb.combined[0, torch.tensor(defined)]).all()


class _DictModel(torch.nn.Module):
    """A classifier that returns a dict, as HF-style models do."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return {"pooled": x.mean(dim=(2, 3)), "scores": self.inner(x)}


def test_ybroad_of_a_dict_output_model_uses_the_runs_output_key(tiny, tmp_path):
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    result = camanim.animate(_DictModel(tiny), x, output_key="scores")
    assert result.options["output_key"] == "scores"
    plain = camanim.ybroad(camanim.animate(tiny, x), percentiles=(50,), noise=0.0)
    keyed = camanim.ybroad(result, percentiles=(50,), noise=0.0)
    # the wrapper adds one record, "inner" (the whole tiny net); the others are tiny's own layers
    assert keyed.layer_names == [f"inner.{n}" for n in plain.layer_names] + ["inner"]
    torch.testing.assert_close(keyed.combined[:, :-1], plain.combined, equal_nan=True)


def test_road_subcommand_scores_every_run_of_a_set(tmp_path, capsys):
    out = tmp_path / "set"
    assert main(["run", "sample:cat", "sample:coffee", "--model", "resnet18", "--weights", "none",
                 "--layers", "layer4.1.bn2", "--out", str(out), "--no-video", "--frame-width", "64", "--quiet"]) == 0
    top = json.loads((out / "manifest.json").read_text())
    assert top["kind"] == "set" and len(top["runs"]) == 2
    capsys.readouterr()
    assert main(["road", str(out), "--road-percentiles", "50", "--quiet"]) == 0
    printed = capsys.readouterr().out
    for run in top["runs"]:
        folder = out / run["folder"]
        assert f"{run['folder']}: " in printed
        yb = json.loads((folder / "ybroad.json").read_text())
        assert [x["name"] for x in yb["layers"]] == ["layer4.1.bn2"] and yb["layers"][0]["ybroad"] is not None
        assert json.loads((folder / "manifest.json").read_text())["ybroad"]["csv"] == "ybroad.csv"


def test_road_on_a_set_with_one_damaged_run_scores_none_of_them(tmp_path, capsys):
    # The runs were scored in turn: the first ones were rewritten before the damaged one stopped it.
    out = tmp_path / "set"
    assert main(["run", "sample:cat", "sample:coffee", "--model", "resnet18", "--weights", "none",
                 "--layers", "layer4.1.bn2", "--out", str(out), "--no-video", "--frame-width", "64", "--quiet"]) == 0
    runs = [out / r["folder"] for r in json.loads((out / "manifest.json").read_text())["runs"]]
    cams = runs[-1] / "cams.npz"
    cams.write_bytes(cams.read_bytes()[:1000])
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["road", str(out), "--road-percentiles", "50", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{cams} is not a readable camanim cams.npz (not a complete .npz archive)" in err[0]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_run_with_road_scores_in_memory_and_writes_the_run_once(tmp_path, monkeypatch):
    import camanim.api as api
    import camanim.results as results

    reports = []
    real = results.write_report
    monkeypatch.setattr(results, "write_report", lambda view: reports.append(view.path) or real(view))
    monkeypatch.setattr(api, "read_run_cams", lambda *a, **k: pytest.fail("--road read cams.npz back"))
    monkeypatch.setattr(api, "write_report", lambda *a, **k: pytest.fail("--road built the report again"))
    out = tmp_path / "out"
    args = ["sample:cat", "--model", "resnet18", "--weights", "none", "--layers", "layer4.1.conv*", "--road",
            "--road-percentiles", "50", "--out", str(out), "--no-video", "--frame-width", "64", "--quiet"]
    assert main(args) == 0
    assert len(reports) == 1
    m = json.loads((out / "manifest.json").read_text())
    assert m["ybroad"]["percentiles"] == [50.0] and (out / "ybroad.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or scratch folder left


def test_random_weights_squeezenet_warns_instead_of_a_star(tmp_path, capsys):
    out = tmp_path / "sq"
    args = ["sample:cat", "--model", "squeezenet1_1", "--weights", "none", "--layers", "features.12.expand*",
            "--road", "--road-percentiles", "50", "--road-trials", "2", "--out", str(out), "--no-video",
            "--frame-width", "64", "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    yb = json.loads((out / "ybroad.json").read_text())
    assert yb["target"]["probability"] < 2 / 1000
    warning = next(w for w in yb["warnings"] if w.startswith("low confidence"))
    assert f"WARNING: {warning}" in printed
    report = (out / "report.html").read_text()
    assert "★" not in report and "highest ybROAD, not trusted" in report
    assert "ybROAD warning" in report and "ybROAD best" not in report


def test_ybroad_across_images(tiny):
    """Several results of one model, method and layers: per-layer mean with a 95% CI across images,
    and the best candidate across them; other methods or layers are refused."""
    from camanim.road.stats import mean_ci

    g = torch.Generator().manual_seed(3)
    images = [torch.randn(1, 3, 16, 16, generator=g) for _ in range(3)]
    results = [camanim.animate(tiny, im) for im in images]
    across = camanim.ybroad(results, percentiles=(50,), score="logit", noise=0.0, trials=2)
    assert isinstance(across, camanim.YbRoadAcross) and len(across.per_image) == 3
    per_image = np.stack([r.road.curve_mean.numpy() for r in results])
    mean, lo, hi = mean_ci(per_image)
    np.testing.assert_allclose(across.mean, mean)
    np.testing.assert_allclose(across.ci[0], lo)
    best = across.best
    defined = across.defined
    candidates = [i for i in range(len(mean)) if defined[i] and results[0].layers[i].same_as is None]
    assert best["index"] == max(candidates, key=lambda i: (mean[i], -i)) and best["unit"] == "images"
    data = across.to_json_dict()
    assert data["layers"][best["index"]]["per_image"] == pytest.approx(per_image[:, best["index"]].tolist())
    # a result scored with these settings is reused, not scored again
    kept = results[0].road
    camanim.ybroad(results, percentiles=(50,), score="logit", noise=0.0, trials=2)
    assert results[0].road is kept
    other = camanim.animate(tiny, images[0], method="hirescam")
    with pytest.raises(camanim.InputError, match="method"):
        camanim.ybroad([results[0], other], percentiles=(50,))
    with pytest.raises(TypeError):
        camanim.ybroad(["not a result"])


def test_ybroad_across_images_refuses_one_images_several_targets(tiny, tiny_input) -> None:
    import camanim

    results = camanim.animate(tiny, tiny_input, target="topk:2")
    with pytest.raises(camanim.InputError, match="explain the same image"):
        camanim.ybroad(results, percentiles=(50,), trials=2)
