"""``camanim sweep``: a sweep killed as a whole (SIGKILL to its process group) keeps readable tables and
resumes to the very numbers of an uninterrupted one; exit 2 only when no item succeeded; Ray is never
imported unless asked for."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _sweepfixture import CLI_ARGS, layer_values, reference_values

from camanim.cli import main
from camanim.sweep import read_table

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    src = str(REPO / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p),
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.mark.slow
def test_killed_sweep_resumes_to_the_same_tables(reference, tmp_path, capsys):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "camanim.cli", "sweep", str(reference["list"]), *CLI_ARGS, "--workers", "1",
           "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, env=_env(), start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(list((out / "images").glob("part-*.parquet"))) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers, at once
        proc.wait()
    before = read_table(out, "images")  # readable as it was left: whole items only
    assert 2 <= before.num_rows < 5
    assert json.loads((out / "sweep.json").read_text())["state"] == "running"

    assert main(["sweep", str(reference["list"]), *CLI_ARGS, "--workers", "2", "--out", str(out)]) == 2
    assert "add --resume" in capsys.readouterr().err
    assert main(["sweep", str(reference["list"]), *CLI_ARGS, "--workers", "2", "--out", str(out), "--resume",
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    assert f"{before.num_rows} finished before" in text
    images = read_table(out, "images").to_pylist()
    assert sorted(r["key"] for r in images) == sorted(reference["rows"])
    assert layer_values(read_table(out, "layers").to_pylist()) == reference_values(reference)
    done = json.loads((out / "sweep.json").read_text())
    assert (done["state"], done["ok"], done["failed"], done["skipped"]) == ("done", 3, 2, before.num_rows)


def test_exit_2_only_when_no_item_succeeded(tmp_path, capsys):
    code = main(["sweep", str(tmp_path / "a.png"), str(tmp_path / "b.png"), *CLI_ARGS, "--workers", "1",
                 "--out", str(tmp_path / "out"), "--quiet"])
    text = capsys.readouterr().out
    assert code == 2
    assert "2 items, 0 done, 2 failed" in text and "a.png (resnet18): image" in text


def test_a_second_sweep_into_the_same_folder_needs_resume(finished, capsys):
    assert main(["sweep", "sample:cat", *CLI_ARGS, "--out", str(finished["out"])]) == 2
    assert "holds a sweep already: add --resume" in capsys.readouterr().err


def test_ray_is_not_imported_unless_asked_for():
    code = "import sys, camanim, camanim.cli, camanim.sweep; print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))"
    got = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=True)
    assert got.stdout.strip() == "[]"


def test_a_bad_option_is_one_line(tmp_path, capsys):
    assert main(["sweep", "sample:cat", *CLI_ARGS, "--workers", "1", "--threads", "0", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == "camanim: error: --threads 0 must be at least 1"
