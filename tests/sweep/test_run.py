"""A whole sweep on the local pool: tables, failures, accuracy, saved runs, sweep.json, resume checks."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from _sweepfixture import MODEL, SETTINGS, layer_values, reference_values

from camanim.errors import InputError
from camanim.sweep import SweepOptions, read_table, run_sweep


def test_pool_gives_the_numbers_of_one_process(finished, reference):
    """Two worker processes, items in any order: every number equals the item computed alone here."""
    layers = pq.read_table(finished["out"] / "layers").to_pylist()
    assert layer_values(layers) == reference_values(reference)
    # 3 good images x 2 methods x 4 layers
    assert len(layers) == 3 * 2 * 4
    images = {r["image"].rsplit("/", 1)[-1]: r for r in read_table(finished["out"], "images").to_pylist()}
    for key, ref in reference["rows"].items():
        row = next(r for r in images.values() if r["key"] == key)
        assert (row["status"], row["predicted"], row["target"]) == (ref["image"]["status"], ref["image"].get("predicted"),
                                                                     ref["image"].get("target"))


def test_bad_items_are_recorded_with_one_line_and_the_sweep_goes_on(finished):
    s = finished["summary"]
    assert (s["items"], s["ok"], s["failed"]) == (5, 3, 2)
    errors = {f["image"].rsplit("/", 1)[-1]: f["error"] for f in s["failures"]}
    assert "not an image Pillow can read" in errors["corrupt.png"]
    assert "not found" in errors["missing.png"]
    assert all("\n" not in e for e in errors.values())
    failed = [r for r in read_table(finished["out"], "images").to_pylist() if r["status"] == "failed"]
    assert sorted(r["error"] for r in failed) == sorted(errors.values())


def test_labels_give_targets_and_accuracy(finished, reference):
    s = finished["summary"]
    rows = {r["image"]: r for r in s["per_image"]}
    cat, coffee, rocket = rows["sample:cat"], rows["sample:coffee"], rows["sample:rocket"]
    assert cat["correct"] is True and cat["target"] == int(reference["labels"]["sample:cat"])
    assert coffee["correct"] is False and coffee["target"] == int(reference["labels"]["sample:coffee"])
    assert rocket["correct"] is None and rocket["target"] == rocket["predicted"]
    assert s["accuracy"] == {MODEL: {"correct": 1, "images": 2, "accuracy": 0.5}}
    groups = s["aggregates"]["groups"]
    assert {g["method"] for g in groups} == {"gradcam", "layercam"}
    for g in groups:
        assert (g["all"]["n_images"], g["correct"]["n_images"], g["incorrect"]["n_images"]) == (3, 1, 1)


def test_progress_and_sweep_json(finished):
    assert finished["progress"][0] == (0, 5) and finished["progress"][-1] == (5, 5)
    assert [d for d, _ in finished["progress"]] == list(range(6))
    data = json.loads((finished["out"] / "sweep.json").read_text())
    assert data["state"] == "done" and data["ok"] == 3
    assert data["settings"]["methods"] == ["gradcam", "layercam"]
    ranking = data["aggregates"]["ranking"][MODEL]
    assert [r["ybroad"] for r in ranking] == sorted((r["ybroad"] for r in ranking), reverse=True)
    assert (finished["out"] / "sweep.png").stat().st_size > 5000
    assert (finished["out"] / "images.csv").read_text().count("\n") == 6
    assert (finished["out"] / "layers.csv").read_text().splitlines()[0].count("morf_50") == 1


def test_save_runs_writes_the_lowest_confidence_image(finished):
    rows = [r for r in finished["summary"]["per_image"] if r["status"] == "ok"]
    lowest = min(rows, key=lambda r: r["predicted_probability"])
    assert [r["image"] for r in rows if r["runs"]] == [lowest["image"]]
    for method, rel in lowest["runs"].items():
        report = finished["out"] / rel
        assert report.is_file() and method in str(report)
        manifest = json.loads((report.parent / "manifest.json").read_text())
        assert manifest["target"]["index"] == lowest["target"]
    assert lowest["runs"]["gradcam"] in (finished["out"] / "sweep.html").read_text()


def test_a_sweep_folder_is_not_overwritten_and_resume_needs_the_same_settings(finished, tmp_path):
    with pytest.raises(InputError, match="holds a sweep already"):
        run_sweep(["sample:cat"], finished["out"], SETTINGS, SweepOptions(models=(MODEL,)))
    other = SETTINGS.__class__(**{**SETTINGS.__dict__, "methods": ("gradcam",)})
    with pytest.raises(InputError, match="other settings.*methods"):
        run_sweep(["sample:cat"], finished["out"], other, SweepOptions(models=(MODEL,), resume=True))
    with pytest.raises(InputError, match="holds no sweep"):
        run_sweep(["sample:cat"], tmp_path / "new", SETTINGS, SweepOptions(models=(MODEL,), resume=True))


def test_the_sweeps_seconds_include_saving_its_runs(finished, reference, tmp_path, monkeypatch):
    """(review) ``--resume --save-runs 2`` on a finished sweep printed "(0.2 s)" for 40 s of saving runs: the
    summary's time runs to the end. A fake clock: saving one run takes 100 "seconds"."""
    import shutil

    import camanim.sweep.run as sweep_run

    out = tmp_path / "out"
    shutil.copytree(finished["out"], out)
    clock = [0.0]
    monkeypatch.setattr(sweep_run.time, "perf_counter", lambda: clock[0])

    def save_run(worker, item, folder):
        clock[0] += 100.0
        return {}

    monkeypatch.setattr(sweep_run, "save_run", save_run)
    summary = run_sweep([str(reference["list"])], out, SETTINGS,
                        SweepOptions(models=(MODEL,), workers=1, resume=True, save_runs=2))
    assert summary["seconds"] >= 200.0  # both saved runs counted (the fake clock moves only while saving)


def test_resume_with_images_outside_the_sweep_is_refused_and_a_superset_counts_only_its_own(finished, reference,
                                                                                           tmp_path, monkeypatch):
    """(review) ``--resume`` with fewer images than the sweep in ``out`` printed "1 items, 1 done, 0 failed, 3
    finished before" and kept aggregating all 3: finished items that are not this sweep's are refused before any
    work (nothing changed), and "finished before" counts only this sweep's items."""
    import shutil

    import camanim.sweep.run as sweep_run

    out = tmp_path / "out"
    shutil.copytree(finished["out"], out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # all 3 items finished ok are others: the sweep's cat is labelled (its label is part of its identity)
    with pytest.raises(InputError) as err:
        run_sweep(["sample:cat"], out, SETTINGS, SweepOptions(models=(MODEL,), workers=1, resume=True))
    assert str(err.value).startswith(f"--resume: '{out}' holds 3 finished items that are not among this sweep's")
    assert "same images" in str(err.value) and "another --out" in str(err.value) and "\n" not in str(err.value)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # a superset: the sweep's own 5 items (3 ok, 2 failed and tried again) plus a new one
    ran: list[int] = []
    monkeypatch.setattr(sweep_run, "run_pool", lambda items, *a: ran.append(len(items)) or 0)
    summary = run_sweep([str(reference["list"]), "sample:motorcycle"], out, SETTINGS,
                        SweepOptions(models=(MODEL,), workers=1, resume=True))
    assert (ran, summary["items"], summary["skipped"]) == ([3], 6, 3)


def test_resume_with_another_road_batch_size_is_the_same_sweep(finished, reference, tmp_path, monkeypatch):
    """(review) ``--road-batch-size`` only sets how many perturbed images go per forward (the numbers do not
    depend on it: tests/road/test_metric.py::test_seeded_reproducible_and_independent_of_batching), yet a resume
    with another one was refused as "other settings (cam, road)"."""
    import dataclasses
    import shutil

    import camanim.sweep.run as sweep_run

    out = tmp_path / "out"
    shutil.copytree(finished["out"], out)
    ran: list[int] = []
    monkeypatch.setattr(sweep_run, "run_pool", lambda items, *a: ran.append(len(items)) or 0)
    other = dataclasses.replace(SETTINGS, road=dataclasses.replace(SETTINGS.road, batch_size=3))
    summary = run_sweep([str(reference["list"])], out, other, SweepOptions(models=(MODEL,), workers=1, resume=True))
    assert (ran, summary["skipped"], summary["ok"]) == ([2], 3, 3)
    other = dataclasses.replace(SETTINGS, road=dataclasses.replace(SETTINGS.road, trials=3))
    with pytest.raises(InputError, match=r"other settings .*\(road\)"):
        run_sweep([str(reference["list"])], out, other, SweepOptions(models=(MODEL,), resume=True))


def test_workers_that_do_not_start_leave_a_resumed_sweep_as_it_was(finished, reference, tmp_path, monkeypatch):
    """(review) A sweep whose workers did not start left ``"state": "running"`` behind: refused before any item,
    a resumed sweep's sweep.json is put back as it was (a new sweep's folder is removed, as for a dead Ray address)."""
    import shutil

    import camanim.sweep.run as sweep_run
    from camanim.sweep.pool import NOT_STARTED

    def not_started(*a):
        raise InputError(NOT_STARTED)

    monkeypatch.setattr(sweep_run, "run_pool", not_started)
    out = tmp_path / "out"
    shutil.copytree(finished["out"], out)
    before = (out / "sweep.json").read_text()
    with pytest.raises(InputError, match="worker processes do not start: check the working folder"):
        run_sweep([str(reference["list"])], out, SETTINGS, SweepOptions(models=(MODEL,), workers=1, resume=True))
    assert (out / "sweep.json").read_text() == before and json.loads(before)["state"] == "done"
    with pytest.raises(InputError, match="worker processes do not start"):
        run_sweep(["sample:cat"], tmp_path / "new", SETTINGS, SweepOptions(models=(MODEL,), workers=1))
    assert not (tmp_path / "new").exists()
    # a new sweep into a folder that was there (empty): left empty, so the next try is not "not a sweep's folder"
    (tmp_path / "there").mkdir()
    for _ in range(2):
        with pytest.raises(InputError, match="worker processes do not start"):
            run_sweep(["sample:cat"], tmp_path / "there", SETTINGS, SweepOptions(models=(MODEL,), workers=1))
        assert list((tmp_path / "there").iterdir()) == []


def test_per_image_probability_has_one_meaning(finished):
    """(review) sweep.json's per_image ``probability`` was the predicted class's while the images table's
    ``probability`` is the target's: sweep.json now names it ``predicted_probability``, as the table does."""
    table = {r["key"]: r for r in read_table(finished["out"], "images").to_pylist()}
    rows = [r for r in finished["summary"]["per_image"] if r["status"] == "ok"]
    assert rows and all("probability" not in r for r in rows)
    assert [r["predicted_probability"] for r in rows] == [table[r["key"]]["predicted_probability"] for r in rows]


def test_resume_after_fixing_a_failed_item_replaces_it(finished, reference, tmp_path, monkeypatch):
    """(review) A failed item the user fixed (a corrected label or image) has another key, and the resume was
    refused as "finished items not among this sweep's": the fixed item replaces the failed one."""
    import shutil

    import camanim.sweep.run as sweep_run

    out = tmp_path / "out"
    shutil.copytree(finished["out"], out)
    folder = tmp_path / "imgs"
    shutil.copytree(reference["list"].parent, folder)
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(folder / "corrupt.png")  # the corrupt file fixed
    ran: list[list[str]] = []
    monkeypatch.setattr(sweep_run, "run_pool", lambda items, *a: ran.append([it.image for it in items]) or 0)
    ok_before = {r["key"] for r in read_table(out, "images").to_pylist() if r["status"] == "ok"}
    assert len(ok_before) == 3
    summary = run_sweep([str(folder / "images.csv")], out, SETTINGS, SweepOptions(models=(MODEL,), workers=1,
                                                                                   resume=True))
    # the fixed file (new content) and the missing one (listed from another folder now) run; the ok ones do not
    assert sorted(Path(p).name for p in ran[0]) == ["corrupt.png", "missing.png"] and summary["skipped"] == 3
    # the old failed parts are gone: only the 3 ok items are in the tables (the pool was a stub here)
    assert {r["key"] for r in read_table(out, "images").to_pylist()} == ok_before
    assert {r["key"] for r in read_table(out, "layers").to_pylist()} == ok_before


def test_a_checkpoint_changed_at_the_same_path_is_another_sweep(tmp_path, monkeypatch):
    """(review) ``--weights best.pt`` overwritten between a sweep and its resume mixed two models in one
    aggregate: the checkpoint's content is part of the settings (and of each item's key)."""
    import torch
    import torchvision

    import camanim.sweep.run as sweep_run

    monkeypatch.setattr(sweep_run, "run_pool", lambda items, *a: 0)  # the settings are what is tested
    ckpt = tmp_path / "best.pt"
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), ckpt)
    settings = SETTINGS.__class__(**{**SETTINGS.__dict__, "weights": str(ckpt)})
    first = run_sweep(["sample:cat"], tmp_path / "out", settings, SweepOptions(models=(MODEL,), workers=1))
    assert first["settings"]["weights_sha256"] is not None
    torch.manual_seed(2)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), ckpt)
    with pytest.raises(InputError, match=r"--resume with other settings .*\(weights_sha256\)"):
        run_sweep(["sample:cat"], tmp_path / "out", settings, SweepOptions(models=(MODEL,), resume=True))


def test_a_resume_keeps_the_links_to_runs_saved_before_and_counts_all_sessions_seconds(finished, reference,
                                                                                      tmp_path, monkeypatch):
    """(review) A resume without --save-runs dropped the links to the runs saved before (still on disk), and
    its seconds were the last session's only: the links stay, and ``seconds_total`` adds the sessions."""
    import shutil

    import camanim.sweep.run as sweep_run

    out = tmp_path / "out"
    shutil.copytree(finished["out"], out)
    before = json.loads((out / "sweep.json").read_text())
    saved = {r["key"]: r["runs"] for r in before["per_image"] if r["runs"]}
    assert len(saved) == 1  # the finished sweep saved the lowest-confidence image's runs
    monkeypatch.setattr(sweep_run, "run_pool", lambda items, *a: 0)
    summary = run_sweep([str(reference["list"])], out, SETTINGS, SweepOptions(models=(MODEL,), workers=1,
                                                                                resume=True))
    assert {r["key"]: r["runs"] for r in summary["per_image"] if r["runs"]} == saved
    assert summary["seconds_total"] == pytest.approx(summary["seconds"] + before["seconds_total"])
    html = (out / "sweep.html").read_text()
    assert all(f'href="{p}"' in html for runs in saved.values() for p in runs.values())


def test_the_layers_table_names_its_percentages_and_one_probability(finished):
    """(review) The Parquet lists did not say which percentage each position is; ``probability`` and
    ``target_probability`` differed in the 8th digit (two forwards): one number now."""
    import pyarrow.parquet as pq

    layers = pq.read_table(finished["out"] / "layers").to_pylist()
    assert layers and all(r["percentiles"] == [50.0] and len(r["morf"]) == 1 for r in layers)
    images = [r for r in pq.read_table(finished["out"] / "images").to_pylist() if r["status"] == "ok"]
    assert images and all(r["probability"] == r["target_probability"] for r in images)
    same = [r for r in images if r["predicted"] == r["target"]]
    assert same and all(r["predicted_probability"] == r["probability"] for r in same)
