"""The local pool: a worker SIGKILLed mid-item is replaced, and every item is in the tables exactly once; a
killed fork server leaves its workers computing, and nothing is printed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _sweepfixture import CLI_ARGS, layer_values, live_children, reference_values

import camanim
from camanim.sweep import read_table


def test_a_killed_worker_is_replaced_and_every_item_is_there_once(finished, reference):
    assert len(finished["killed"]) == 2  # both workers, one of them mid-item
    assert finished["summary"]["restarts"] >= 1
    images = read_table(finished["out"], "images").to_pylist()
    keys = [r["key"] for r in images]
    assert sorted(keys) == sorted(reference["rows"]) and len(set(keys)) == len(keys)
    # the item that was running when its worker died was run again, and counted
    assert max(r["attempts"] for r in images) == 2
    assert layer_values(read_table(finished["out"], "layers").to_pylist()) == reference_values(reference)


def test_tables_are_whole_at_every_progress_report(finished):
    """Read back at each report while the sweep ran: one images row per finished item, and its layers (8 rows
    per good item: 2 methods x 4 layers, none for a failed one)."""
    reads = finished["reads"]
    assert [d for d, _, _ in reads] == list(range(6))
    for done, n_images, n_layers in reads:
        assert n_images == done
        assert n_layers % 8 == 0 and n_layers <= 8 * n_images


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (read from /proc)."""
    return live_children().get(pid, [])


@pytest.mark.slow
def test_a_killed_fork_server_and_worker_leave_no_traceback(reference, tmp_path):
    """(review) SIGKILL to the pool's fork server made every worker look dead (their exit is read from it):
    the parent gave up a worker that was still computing, re-ran its item, and the worker's result then
    met a closed pipe (a BrokenPipeError traceback). A worker is now known dead by the end of its pipe:
    the orphaned worker's result is taken, only the killed worker is replaced, and stderr stays empty."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "camanim.cli", "sweep", str(tmp_path / "missing.png"), "sample:cat", "sample:rocket",
           *CLI_ARGS, "--workers", "2", "--out", str(out), "--quiet"]
    src = str(Path(camanim.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed: list[str] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not list((out / "images").glob("part-" + "?" * 16 + ".parquet")):
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.1)
        servers = [p for p in _children(proc.pid) if b"forkserver" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(servers) == 1
        workers = _children(servers[0])
        assert len(workers) == 2
        os.kill(servers[0], signal.SIGKILL)
        os.kill(workers[0], signal.SIGKILL)
        killed += ["server", "worker"]
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert killed and proc.returncode == 0, stderr.decode()
    assert stderr.decode() == ""  # no traceback, no warning
    assert "3 items, 2 done, 1 failed, 1 worker replaced" in stdout.decode()
    images = read_table(out, "images").to_pylist()
    assert sorted(r["image"].rsplit("/", 1)[-1] for r in images) == ["missing.png", "sample:cat", "sample:rocket"]
    rocket = next(r for r in images if r["image"] == "sample:rocket")
    assert rocket["key"] in reference["rows"]  # unlabelled in both: the same item as the reference's
    layers = [r for r in read_table(out, "layers").to_pylist() if r["key"] == rocket["key"]]
    assert layer_values(layers) == layer_values(reference["rows"][rocket["key"]]["layers"])
