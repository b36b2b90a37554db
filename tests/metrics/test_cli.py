"""`camanim run --metric ...`: each metric's files, the manifest's agreement table and the report's card."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from conftest import small_net

from camanim.cli import main


def test_run_with_metrics_writes_each_metric_and_the_agreement(tmp_path, capsys):
    torch.save(small_net(), tmp_path / "small.pt")
    out = tmp_path / "out"
    args = ["sample:cat", "--model", str(tmp_path / "small.pt"), "--trust-checkpoint", "--input-size", "24",
            "--metric", "road,deletion,avgdrop,cammult", "--road-percentiles", "50", "--out", str(out),
            "--no-video", "--frame-width", "48", "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "best layer per metric" in printed and "| deletion (lower better) |" in printed
    m = json.loads((out / "manifest.json").read_text())
    assert m["ybroad"]["csv"] == "ybroad.csv"  # road in --metric is --road
    assert set(m["metrics"]["files"]) == {"deletion", "avgdrop", "cammult"}
    names = [layer["name"] for layer in m["layers"]]
    for metric in ("deletion", "avgdrop", "cammult"):
        rows = list(csv.DictReader((out / f"metric_{metric}.csv").open()))
        assert [r["name"] for r in rows] == names
        data = json.loads((out / f"metric_{metric}.json").read_text())
        assert [x["value"] for x in data["layers"]] == m["metrics"]["values"][metric]
        assert (out / f"metric_{metric}.png").stat().st_size > 1000
    assert m["metrics"]["chance"]["deletion"] is not None and m["metrics"]["chance"]["avgdrop"] is None
    table = m["metrics"]["agreement"]
    assert table["metrics"] == ["road", "deletion", "avgdrop", "cammult"]
    assert table["best"][0]["index"] == m["ybroad"]["max"]["index"]
    dele = m["metrics"]["values"]["deletion"]
    defined = [i for i, v in enumerate(dele) if v is not None]
    assert table["best"][1]["index"] == min(defined, key=lambda i: dele[i])
    assert table["spearman"][1][1] == pytest.approx(1.0)
    assert "Faithfulness metrics" in (out / "report.html").read_text()


def test_unknown_metric_is_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sample:cat", "--metric", "road,nonsense", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "metric 'nonsense' is unknown" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_metric_road_switches_ybroad_on_like_the_road_flag():
    import argparse

    from camanim.cli import metric_options

    args = argparse.Namespace(metric="road", road=False, road_score="prob", seed=0)
    assert metric_options(args) is None and args.road is True


def test_road_rescoring_recomputes_the_metrics_agreement(tmp_path, capsys):
    from camanim.metrics import LayerCurve, agreement

    torch.save(small_net(), tmp_path / "small.pt")
    out = tmp_path / "out"
    assert main(["sample:cat", "--model", str(tmp_path / "small.pt"), "--trust-checkpoint", "--input-size", "24",
                 "--metric", "all", "--road-percentiles", "50", "--out", str(out), "--no-video",
                 "--frame-width", "48", "--quiet"]) == 0
    before = json.loads((out / "manifest.json").read_text())["metrics"]
    assert main(["road", str(out), "--trust-checkpoint", "--road-percentiles", "10,90"]) == 0
    capsys.readouterr()
    m = json.loads((out / "manifest.json").read_text())
    yb = json.loads((out / "ybroad.json").read_text())
    road = [x["ybroad"] if x["defined"] else None for x in yb["layers"]]
    assert m["metrics"]["values"]["road"] == road != before["values"]["road"]
    for name in ("deletion", "insertion", "avgdrop", "increase", "cammult"):
        assert m["metrics"]["values"][name] == before["values"][name]
    # the agreement is that of the new ybROAD and the saved metrics, in the manifest and its files alike
    same = [layer["same_as"] for layer in m["layers"]]
    names = [layer["name"] for layer in m["layers"]]
    expected = agreement({k: LayerCurve(k, names, np.array([np.nan if v is None else v for v in vals], dtype=float),
                                        same_as=same) for k, vals in m["metrics"]["values"].items()})
    table = m["metrics"]["agreement"]
    assert table["metrics"][0] == "road" and table["best"][0] == expected["best"][0]
    assert table["best"][0]["index"] == m["ybroad"]["max"]["index"]
    np.testing.assert_allclose(np.array(table["spearman"], dtype=float), np.array(expected["spearman"], dtype=float))
    assert table["spearman"][0] != before["agreement"]["spearman"][0]
    assert json.loads((out / "metrics_agreement.json").read_text()) == table
    rows = list(csv.DictReader((out / "metrics_agreement.csv").open()))
    assert rows[0]["best_layer"] == (table["best"][0]["layer"] or "")
    assert m["metrics"]["chance"]["road"][1:] == pytest.approx(yb["baseline"]["band"])


def test_a_metric_where_every_layer_ties_keeps_its_chart_and_says_so_in_the_report(tmp_path, capsys):
    """(review) ``increase`` is 0 or 1 per layer with one image, so every layer often ties: the report dropped the
    metric's chart (no best index) and the table showed '-'. The chart stays, with no layer marked best."""
    import re

    torch.save(small_net(), tmp_path / "small.pt")
    out = tmp_path / "out"
    assert main(["sample:cat", "--model", str(tmp_path / "small.pt"), "--trust-checkpoint", "--input-size", "24",
                 "--metric", "increase,deletion", "--out", str(out), "--no-video", "--frame-width", "48",
                 "--quiet"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    increase = next(b for b in m["metrics"]["agreement"]["best"] if b["metric"] == "increase")
    values = [v for v in m["metrics"]["values"]["increase"] if v is not None]
    html = (out / "report.html").read_text()
    assert 'aria-label="increase per layer"' in html and 'aria-label="deletion per layer"' in html
    chart = re.search(r'<svg[^>]*id="metric-increase-plot".*?</svg>', html, re.S).group(0)
    if len(set(values)) == 1:  # every layer ties (the usual case with one image)
        assert increase["layer"] is None and "all layers tie: no best layer" in chart and "cam-yb-point cam-best" not in chart
        assert "<code>all layers tie</code>" in html
    else:
        assert increase["layer"] is not None and "cam-yb-point cam-best" in chart
