"""Session fixtures of the sweep tests: the reference numbers computed item by item in this process, and
one finished sweep on the local pool (see ``tests/_sweepfixture.py`` for the tiny setting)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal

import pytest
from _sweepfixture import MODEL, SETTINGS, make_image_list

from camanim.sweep import SweepOptions, expand_images, read_table, run_sweep, sweep_items
from camanim.sweep.work import ItemWorker


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> dict:
    """Each good item computed in this process (no pool); the labels: cat's = its prediction (correct),
    coffee's = another class (incorrect), rocket without a label."""
    worker = ItemWorker(SETTINGS, own_process=False)
    first = worker.run(sweep_items(expand_images(["sample:cat"]), [MODEL], "none")[0])
    predicted = first["image"]["predicted"]
    labels = {"sample:cat": str(predicted), "sample:coffee": str((predicted + 1) % 1000)}
    folder = tmp_path_factory.mktemp("images")
    image_list = make_image_list(folder, labels)
    items = sweep_items(expand_images([str(image_list)]), [MODEL], "none")
    rows = {it.key: worker.run(it) for it in items}
    return {"list": image_list, "items": items, "rows": rows, "labels": labels}


@pytest.fixture(scope="session")
def finished(reference, tmp_path_factory) -> dict:
    """One sweep of the reference list on the local pool (2 workers), the lowest-confidence image saved as runs.

    When the first item is in, every worker process is killed with SIGKILL (the other one is mid-item);
    at each progress report the tables are read back whole (``reads``)."""
    out = tmp_path_factory.mktemp("sweep") / "out"
    seen: list[tuple[int, int]] = []
    killed: list[int] = []
    reads: list[tuple[int, int, int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        images, layers = read_table(out, "images"), read_table(out, "layers")
        reads.append((done, images.num_rows, layers.num_rows))
        if done == 1 and not killed:
            for proc in mp.active_children():
                if proc.name == "camanim-sweep":
                    os.kill(proc.pid, signal.SIGKILL)
                    killed.append(proc.pid)

    summary = run_sweep([str(reference["list"])], out, SETTINGS,
                        SweepOptions(models=(MODEL,), workers=2, save_runs=1, save_which="lowest-confidence"),
                        progress=progress)
    return {"out": out, "summary": summary, "progress": seen, "killed": killed, "reads": reads}
