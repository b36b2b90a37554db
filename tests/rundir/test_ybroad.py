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
                       "combined_40.5", "ybroad", "ybroad_std"]
    assert rows[1] == ["0", "conv", "True", "0.1", "0.3", "0.1", "0.2", "", "", "0.1", ""]
    assert rows[2][:3] == ["1", "fc", "False"] and set(rows[2][3:]) == {""}
    assert read_ybroad(tmp_path, {}) == DATA


def test_read_ybroad_none_without_a_file_and_an_error_for_a_broken_one(tmp_path):
    assert read_ybroad(tmp_path, {}) is None
    (tmp_path / "ybroad.json").write_text("[]")
    with pytest.raises(InputError, match="not a ybROAD result"):
        read_ybroad(tmp_path, {"ybroad": {"json": "ybroad.json"}})
