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
from _sweepfixture import CLI_ARGS, free_port, layer_values, reference_values

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
        while time.monotonic() < deadline and len(list((out / "images").glob("part-" + "?" * 16 + ".parquet"))) < 2:
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


def test_a_ray_address_where_no_cluster_answers_is_refused_at_once(tmp_path, capsys, monkeypatch):
    """(review) ``--ray 127.0.0.1:PORT`` with no cluster there waited without end inside ``ray.init``: the
    port must answer a plain TCP connection first (a few seconds at most), else one line, exit 2, no folder,
    and Ray is never reached (a regression fails here instead of hanging)."""
    import camanim.sweep.cluster as cluster

    def reached() -> None:
        raise AssertionError("Ray was imported for an address where nothing answers")

    monkeypatch.setattr(cluster, "_ray", reached)
    port = free_port()
    out = tmp_path / "out"
    assert main(["sweep", "sample:cat", *CLI_ARGS, "--ray", f"127.0.0.1:{port}", "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err == (f"camanim: error: no Ray cluster answers at 127.0.0.1:{port}: start one with "
                                       f"`ray start --head --port={port}` or use --ray auto\n")
    assert not out.exists()
    assert main(["sweep", "sample:cat", *CLI_ARGS, "--ray", "127.0.0.1", "--out", str(out)]) == 2
    assert capsys.readouterr().err == ("camanim: error: --ray '127.0.0.1' is neither auto nor HOST:PORT: give e.g. "
                                       "--ray 127.0.0.1:6379 or --ray auto\n")


@pytest.mark.parametrize(("extra", "message"), [
    (["--layers", "nosuchlayer*"], "layer pattern 'nosuchlayer*' matches no layer of torchvision's resnet18"),
    (["--model", "resnet18,nosuchmodel"], "nosuchmodel"),
    (["--labels", "missing-labels.txt"], "labels file"),
    (["--num-classes", "7"], None),  # a head of 7 classes: fine with random weights (the option reaches the model)
    (["--device", "gpu0"], "--device 'gpu0' is unknown: use cpu or cuda"),
])
def test_an_option_that_fits_no_item_is_refused_before_any_item_runs(extra, message, tmp_path, capsys, monkeypatch):
    """(review) A layer pattern matching no layer, a model that does not load, a labels file that is not there
    failed every item one by one (``--labels``, ``--num-classes``, ``--channels`` and ``--trust-checkpoint`` were
    not even passed on): each is checked against each model before any item runs, one line, exit 2, no folder."""
    import camanim.sweep.run as sweep_run

    ran: list[int] = []
    monkeypatch.setattr(sweep_run, "run_pool", lambda items, *a: ran.append(len(items)) or 0)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    code = main(["sweep", "sample:cat", *CLI_ARGS, *extra, "--workers", "1", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    if message is None:  # accepted: it runs (the pool is a stub here)
        assert (code, ran) == (2, [1]) and err == ""
        assert json.loads((out / "sweep.json").read_text())["settings"]["model_options"] == {"num_classes": 7}
        return
    assert code == 2 and ran == [] and not out.exists()
    assert err.startswith("camanim: error: ") and err.count("\n") == 1 and message in err, err


@pytest.mark.slow
def test_ctrl_c_stops_the_sweep_with_one_line_and_readable_tables(tmp_path):
    """(review) Ctrl-C (SIGINT to the whole process group, as a terminal sends it) printed every worker's
    KeyboardInterrupt traceback: workers ignore it, the parent stops them, says how far it got in one line,
    exits 130, and the finished items are in the tables for --resume."""
    out = tmp_path / "out"
    # the missing file is done as soon as the worker has its model: then it is mid-item on the cat
    cmd = [sys.executable, "-m", "camanim.cli", "sweep", str(tmp_path / "missing.png"), "sample:cat",
           *CLI_ARGS, "--workers", "1", "--out", str(out), "--quiet"]
    # SIGINT as a terminal leaves it, even where pytest itself runs with it ignored (a background job)
    proc = subprocess.Popen(cmd, env=_env(), start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not list((out / "images").glob("part-" + "?" * 16 + ".parquet")):
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    done = read_table(out, "images").num_rows
    assert done == 1
    assert (proc.returncode, err.decode()) == (
        130, "camanim: interrupted: 1 of 2 items finished; resume with --resume\n")
    deadline = time.monotonic() + 10  # its workers and fork server end with it
    while time.monotonic() < deadline and _group(proc.pid):
        time.sleep(0.1)
    assert _group(proc.pid) == []
    assert json.loads((out / "sweep.json").read_text())["state"] == "running"


def _group(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (zombies are dead)."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z" and int(fields[2]) == pgid:
                pids.append(int(name))
    return pids


def test_the_best_layer_line_says_whether_it_is_above_chance(finished, reference, tmp_path, capsys, monkeypatch):
    """(review) The summary's best-layer line never said whether the best layer is above the chance band
    (sweep.json has it): the line ends with "interval above the chance band: yes|no", as the verdict's statement
    (the best layer's interval above the band: ``separable_from_baseline``), not its mean alone."""
    import camanim.sweep as sweep

    monkeypatch.setattr(sweep, "run_sweep", lambda *a, **k: finished["summary"])  # a real sweep's summary
    assert main(["sweep", str(reference["list"]), *CLI_ARGS, "--out", str(tmp_path / "o"), "--quiet"]) == 0
    text = capsys.readouterr().out
    groups = json.loads((finished["out"] / "sweep.json").read_text())["aggregates"]["groups"]
    assert len(groups) == 2
    for g in groups:
        best = g["all"]["best"]
        word = {True: "yes", False: "no", None: "undetermined"}[best["separable_from_baseline"]]
        line = next(x for x in text.splitlines() if x.startswith(f"resnet18 {g['method']}: best layer"))
        assert line.endswith(f"over 3 images; interval above the chance band: {word}"), line


def test_a_group_without_a_best_layer_and_images_left_out_are_said(finished, reference, tmp_path, capsys,
                                                                   monkeypatch):
    """(review) A (model, method) whose images gave no scored layer vanished from the summary without a word;
    images left out of a group's statistics (every CAM constant there) are counted on its line."""
    import copy

    import camanim.sweep as sweep

    summary = copy.deepcopy(finished["summary"])
    first, second = summary["aggregates"]["groups"]
    first["all"].update(best=None, statement="no layer has a defined ROAD score (non-spatial or constant CAMs only)",
                        images_left_out=["a.png", "b.png", "c.png"], n_images=0)
    second["all"]["images_left_out"] = ["d.png"]
    monkeypatch.setattr(sweep, "run_sweep", lambda *a, **k: summary)
    assert main(["sweep", str(reference["list"]), *CLI_ARGS, "--out", str(tmp_path / "o"), "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (f"resnet18 {first['method']}: no best layer: no layer has a defined ROAD score (non-spatial or constant "
            "CAMs only) (3 left out: no layer scored there)") in lines
    line = next(x for x in lines if x.startswith(f"resnet18 {second['method']}: best layer"))
    assert f"over {second['all']['n_images']} images (1 left out: no layer scored there); interval above the chance band:" in line


def test_duplicate_files_are_one_item_and_said_so(tmp_path, capsys, monkeypatch):
    """(review) Byte-identical files at different paths were merged into one item silently (6 files, 4 items,
    the copies nowhere): still one item (keyed by content), but the summary counts them, sweep.json lists
    them with the file they repeat, and sweep.html too. A list naming one path twice stays merged silently."""
    import camanim.sweep.run as sweep_run

    ran: list[list[str]] = []
    monkeypatch.setattr(sweep_run, "run_pool", lambda items, *a: ran.append([it.image for it in items]) or 0)
    imgs = tmp_path / "imgs"
    (imgs / "sub").mkdir(parents=True)
    for name, data in (("a.png", b"A"), ("b.png", b"A"), ("c.png", b"C"), ("sub/d.png", b"A"), ("sub/e.png", b"C"),
                       ("sub/f.png", b"F")):
        (imgs / name).write_bytes(data)
    out = tmp_path / "out"
    main(["sweep", str(imgs), *CLI_ARGS, "--out", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert ran == [[str(imgs / "a.png"), str(imgs / "c.png"), str(imgs / "sub/f.png")]]
    assert "3 duplicate files (the same content as another) not run again" in text
    done = json.loads((out / "sweep.json").read_text())
    assert done["duplicates"] == [{"path": str(imgs / "b.png"), "same_as": str(imgs / "a.png")},
                                  {"path": str(imgs / "sub/d.png"), "same_as": str(imgs / "a.png")},
                                  {"path": str(imgs / "sub/e.png"), "same_as": str(imgs / "c.png")}]
    html = (out / "sweep.html").read_text()
    assert "<ul id=duplicates>" in html and html.count(f"same content as {imgs / 'a.png'}") == 2
    # one path named twice (a list and the file itself) is one file: nothing to tell
    listed = tmp_path / "list.csv"
    listed.write_text(f"path\n{imgs / 'a.png'}\n{imgs / 'c.png'}\n")
    main(["sweep", str(listed), str(imgs / "a.png"), *CLI_ARGS, "--out", str(tmp_path / "o2"), "--quiet"])
    assert "duplicate files" not in capsys.readouterr().out
    assert json.loads((tmp_path / "o2" / "sweep.json").read_text())["duplicates"] == []


@pytest.mark.slow
def test_a_module_named_like_the_stdlibs_in_the_working_folder_does_not_break_the_workers(tmp_path):
    """(review) A ``random.py`` in the current folder crashed the sweep (``EOFError`` from the fork server, which
    starts with ``python -c``, so the working folder came first on its sys.path) and left sweep.json "running";
    ``camanim run`` works there. Run as the console script runs (the script's own folder first on sys.path)."""
    work, bin_ = tmp_path / "work", tmp_path / "bin"
    work.mkdir()
    bin_.mkdir()
    (work / "random.py").write_text("raise RuntimeError('the working folder was imported from')\n")
    (work / "html.py").write_text("raise RuntimeError('the working folder was imported from')\n")
    script = bin_ / "camanim_script.py"
    script.write_text("import sys\nfrom camanim.cli import main\nif __name__ == '__main__':\n    sys.exit(main())\n")
    got = subprocess.run([sys.executable, str(script), "sweep", "sample:cat", *CLI_ARGS, "--workers", "1",
                          "--out", "o", "--quiet"], cwd=work, env=_env(), capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith("sweep: 1 item, 1 done, 0 failed")
    assert json.loads((work / "o" / "sweep.json").read_text())["state"] == "done"
    assert "PYTHONSAFEPATH" not in os.environ  # restored here too (the test process sets nothing)


def test_ray_auto_with_a_ray_address_where_no_cluster_answers_is_refused(tmp_path, capsys, monkeypatch):
    """(review) ``RAY_ADDRESS=127.0.0.1:1 camanim sweep ... --ray auto`` silently started its own local cluster:
    the address the user set is refused as ``--ray ADDRESS`` is (one line, exit 2, no folder, Ray not reached)."""
    import camanim.sweep.cluster as cluster

    def reached() -> None:
        raise AssertionError("Ray was imported for an address where nothing answers")

    monkeypatch.setattr(cluster, "_ray", reached)
    port = free_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    out = tmp_path / "out"
    assert main(["sweep", "sample:cat", *CLI_ARGS, "--ray", "auto", "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err == (f"camanim: error: RAY_ADDRESS=127.0.0.1:{port}: no Ray cluster answers there; "
                                       "unset RAY_ADDRESS to start a local one, or start the cluster\n")
    assert not out.exists()
    monkeypatch.setenv("RAY_ADDRESS", "nohostport")
    assert main(["sweep", "sample:cat", *CLI_ARGS, "--ray", "auto", "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err == ("camanim: error: RAY_ADDRESS=nohostport is not HOST:PORT: unset RAY_ADDRESS "
                                       "to start a local one, or set it to the cluster's address\n")


def _summary_out(summary: dict, argv: list[str], reference, tmp_path, capsys, monkeypatch) -> str:
    """The CLI's output for ``summary`` (run_sweep stubbed) with ``argv`` after the usual arguments."""
    import camanim.sweep as sweep

    monkeypatch.setattr(sweep, "run_sweep", lambda *a, **k: summary)
    assert main(["sweep", str(reference["list"]), *CLI_ARGS, "--out", str(tmp_path / "o"), "--quiet", *argv]) == 0
    return capsys.readouterr().out


def test_the_summary_line_is_singular_for_one(finished, reference, tmp_path, capsys, monkeypatch):
    """(review) 'over 1 images', '1 workers replaced', '1 duplicate files', '1 items': singular for one."""
    import copy

    summary = copy.deepcopy(finished["summary"])
    summary.update(items=1, ok=1, failed=0, skipped=1, restarts=1, seconds=2.0, seconds_total=2.0,
                   duplicates=[{"path": "b.png", "same_as": "a.png"}])
    first, second = summary["aggregates"]["groups"]
    first["all"]["n_images"] = 1
    lines = _summary_out(summary, [], reference, tmp_path, capsys, monkeypatch).splitlines()
    assert lines[0] == ("sweep: 1 item, 1 done, 0 failed, 1 finished before, 1 duplicate file (the same content as "
                        "another) not run again, 1 worker replaced (2.0 s)")
    assert next(x for x in lines if x.startswith(f"resnet18 {first['method']}: ")).count(" over 1 image; ") == 1
    assert next(x for x in lines if x.startswith(f"resnet18 {second['method']}: ")).count(" over 3 images; ") == 1
    summary.update(items=5, ok=3, failed=2, skipped=0, restarts=2,
                   duplicates=[{"path": "b.png", "same_as": "a.png"}, {"path": "c.png", "same_as": "a.png"}])
    assert _summary_out(summary, [], reference, tmp_path, capsys, monkeypatch).splitlines()[0] == (
        "sweep: 5 items, 3 done, 2 failed, 2 duplicate files (the same content as another) not run again, "
        "2 workers replaced (2.0 s)")


def test_the_summary_gives_all_sessions_seconds_after_a_resume(finished, reference, tmp_path, capsys, monkeypatch):
    """(review) After ``--resume`` the line gave only the last session's seconds: with ``seconds_total`` (absent in
    older summaries) both, when they differ."""
    import copy

    summary = copy.deepcopy(finished["summary"])
    summary.update(seconds=12.34, seconds_total=100.0)
    first = _summary_out(summary, [], reference, tmp_path, capsys, monkeypatch).splitlines()[0]
    assert first.endswith(" (12.3 s this session, 100.0 s in all)"), first
    summary["seconds_total"] = 12.34
    assert _summary_out(summary, [], reference, tmp_path, capsys, monkeypatch).splitlines()[0].endswith(" (12.3 s)")


def test_fewer_saved_runs_than_asked_are_said(finished, reference, tmp_path, capsys, monkeypatch):
    """(review) ``--save-runs 2 --save-which misclassified`` with one misclassified image saved one run without a
    word: one line says how many were saved of how many asked, and why fewer."""
    import copy

    summary = copy.deepcopy(finished["summary"])
    rows = summary["per_image"]
    for r in rows:
        r["runs"] = {}
    wrong = [r for r in rows if r["correct"] is False]
    assert len(wrong) == 1  # the fixture's coffee
    wrong[0]["runs"] = {"gradcam": "runs/x/gradcam/report.html", "layercam": "runs/x/layercam/report.html"}
    text = _summary_out(summary, ["--save-runs", "2", "--save-which", "misclassified"], reference, tmp_path, capsys,
                        monkeypatch)
    assert [x for x in text.splitlines() if x.startswith("saved runs")] == [
        "saved runs: 1 of 2 asked (only 1 misclassified image)"]
    text = _summary_out(summary, ["--save-runs", "1", "--save-which", "misclassified"], reference, tmp_path, capsys,
                        monkeypatch)
    assert "saved runs" not in text  # as many as asked
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 3
    for r in ok:
        r["runs"] = {"gradcam": "runs/x/gradcam/report.html"}
    ok[1]["runs"] = {"error": "the frames could not be written"}
    text = _summary_out(summary, ["--save-runs", "5"], reference, tmp_path, capsys, monkeypatch)
    assert [x for x in text.splitlines() if x.startswith("saved runs")] == [
        "saved runs: 2 of 5 asked (only 3 items done; 1 not saved: the frames could not be written)"]


def test_progress_lines_when_stderr_is_not_a_terminal(reference, tmp_path, capsys, monkeypatch):
    """(review) With stderr not a terminal (a log, nohup, CI) the sweep said nothing until its summary: a plain
    line with the count, the rate and the ETA at most every 10 s, and one on the last item; none with --quiet."""
    import types

    import camanim.cli as cli
    import camanim.sweep as sweep

    monkeypatch.delenv("CAMANIM_PROGRESS", raising=False)
    now = [100.0]
    monkeypatch.setattr(cli, "time", types.SimpleNamespace(monotonic=lambda: now[0], sleep=time.sleep))
    summary = {"items": 10, "ok": 10, "failed": 0, "skipped": 4, "restarts": 0, "seconds": 70.0, "duplicates": [],
               "failures": [], "accuracy": None, "aggregates": {"groups": []}, "paths": {}, "per_image": []}

    def fake_sweep(*a, progress=None, **k):
        for t, done in ((0, 4), (5, 5), (12, 6), (15, 7), (30, 8), (39, 9), (42, 10)):
            now[0] = 100.0 + t
            if progress is not None:
                progress(done, 10)
        return summary

    monkeypatch.setattr(sweep, "run_sweep", fake_sweep)
    assert main(["sweep", str(reference["list"]), *CLI_ARGS, "--out", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "sweep: 4/10 items",
        "sweep: 6/10 items (10 items/min, ETA 24s)",  # 2 items in 12 s; 4 to go
        "sweep: 8/10 items (8 items/min, ETA 15s)",  # 4 in 30 s; 7 and 9 fewer than 10 s after a line
        "sweep: 10/10 items (8.57 items/min)",  # the last item, whenever it comes
    ]
    assert main(["sweep", str(reference["list"]), *CLI_ARGS, "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
