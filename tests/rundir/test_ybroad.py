"""``ybroad.json`` / ``ybroad.csv`` from one dict; read back only when the run was scored."""

from __future__ import annotations

import csv
import json

import pytest

from camanim import InputError
from camanim.rundir import read_ybroad, write_ybroad_tables

DATA = {"percentiles": [20, 40.5], "layers": [
    {"index": 0, "name": "conv", "defined": True, "morf": [0.1, 0.2], "lerf": [0.3, None],
     "combined": [0.1, None], "ybroad": 0.1, "ybroad_std": None},
    {"index": 1, "name": "fc", "defined": False, "morf": [None, None], "lerf": [None, None],
     "combined": [None, None], "ybroad": None, "ybroad_std": None}]}


def test_tables_hold_the_same_numbers(tmp_path):
    paths = write_ybroad_tables(tmp_path, DATA)
    assert json.loads(paths["json"].read_text()) == DATA
    rows = list(csv.reader(paths["csv"].open()))
    assert rows[0] == ["index", "name", "defined", "morf_20", "lerf_20", "combined_20", "morf_40.5", "lerf_40.5",
                       "combined_40.5", "ybroad", "ybroad_std", "ybroad_ci_low", "ybroad_ci_high", "morf_mean",
                       "lerf_mean", "above_baseline", "baseline_band_low", "baseline_band_high", "same_as", "note"]
    # an older dict without the interval, baseline and aliases: those cells stay empty
    assert rows[1] == ["0", "conv", "True", "0.1", "0.3", "0.1", "0.2", "", "", "0.1", ""] + [""] * 9
    assert rows[2][:3] == ["1", "fc", "False"] and set(rows[2][3:]) == {""}
    assert read_ybroad(tmp_path, {}) == DATA


def test_tables_hold_the_interval_baseline_and_aliases(tmp_path):
    data = {"percentiles": [50], "baseline": {"band": [-0.01, 0.02]}, "layers": [
        {"index": 0, "name": "b.bn.drop", "defined": True, "morf": [0.1], "lerf": [0.3], "combined": [0.1],
         "ybroad": 0.1, "ybroad_std": 0.01, "ybroad_ci": [0.08, 0.12], "morf_mean": 0.1, "lerf_mean": 0.3,
         "above_baseline": True, "same_as": None, "note": "BatchNorm output, before activation"},
        {"index": 1, "name": "b.bn", "defined": True, "morf": [0.1], "lerf": [0.3], "combined": [0.1],
         "ybroad": 0.1, "ybroad_std": 0.01, "ybroad_ci": [0.08, 0.12], "morf_mean": 0.1, "lerf_mean": 0.3,
         "above_baseline": False, "same_as": 0, "note": None}]}
    paths = write_ybroad_tables(tmp_path, data)
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [rows[0][k] for k in ("ybroad_ci_low", "ybroad_ci_high", "morf_mean", "lerf_mean", "above_baseline",
                                 "baseline_band_low", "baseline_band_high", "same_as", "note")] == [
        "0.08", "0.12", "0.1", "0.3", "True", "-0.01", "0.02", "", "BatchNorm output, before activation"]
    assert rows[1]["same_as"] == "0" and rows[1]["above_baseline"] == "False"


def test_read_ybroad_none_without_a_file_and_an_error_for_a_broken_one(tmp_path):
    assert read_ybroad(tmp_path, {}) is None
    (tmp_path / "ybroad.json").write_text("[]")
    with pytest.raises(InputError, match="not a ybROAD result"):
        read_ybroad(tmp_path, {"ybroad": {"json": "ybroad.json"}})
