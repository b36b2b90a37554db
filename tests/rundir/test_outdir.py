"""The output folder: refused when replacing it would delete what camanim did not write; an earlier run is replaced whole."""

from __future__ import annotations

import json
import os

import pytest

from camanim import InputError
from camanim.rundir import prepare_out_dir, staged_dir

RUN_MANIFEST = json.dumps({"versions": {"camanim": "0.1.0"}, "layers": [{"name": "conv"}], "normalisations": ["local"],
                           "frames": {"local": "frames/local", "count": 1},
                           "metrics": {"files": {"deletion": {"csv": "metric_deletion.csv"}}}})
SECOND = json.dumps({"versions": {"camanim": "0.1.0"}, "second": 1})


def test_staged_dir_replaces_an_earlier_run_whole_and_cleans_up_on_failure(tmp_path):
    out = tmp_path / "run"
    with staged_dir(out) as tmp:
        (tmp / "manifest.json").write_text(RUN_MANIFEST)
        (tmp / "cams.npz").write_text("old")
    assert sorted(p.name for p in out.iterdir()) == ["cams.npz", "manifest.json"]
    assert out.stat().st_mode & 0o755 == 0o755
    with staged_dir(out) as tmp:
        (tmp / "manifest.json").write_text(SECOND)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]
    with pytest.raises(RuntimeError), staged_dir(out) as tmp:
        (tmp / "manifest.json").write_text("half")
        raise RuntimeError("died")
    assert (out / "manifest.json").read_text() == SECOND
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_prepare_out_dir_refuses_files_and_foreign_folders(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        prepare_out_dir(tmp_path / "file")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_text("x")
    with pytest.raises(InputError, match=r"is not empty \(cat.jpg\) and not a camanim run"):
        prepare_out_dir(tmp_path / "photos")
    assert prepare_out_dir(tmp_path / "new" / "run") == (tmp_path / "new").resolve()


def _run_folder(folder, manifest=RUN_MANIFEST):
    (folder / "frames" / "local").mkdir(parents=True)
    (folder / "frames" / "local" / "0000.png").write_bytes(b"png")
    for name in ("cams.npz", "report.html", "camanim_local.mp4", "ybroad.csv", "metric_deletion.json",
                 "layer_time.png", ".DS_Store"):
        (folder / name).write_text("x")
    (folder / "manifest.json").write_text(manifest)
    return folder


def test_a_folder_with_a_manifest_json_that_is_not_camanims_is_refused_not_replaced(tmp_path):
    # A web app's or a dataset's manifest.json made the folder pass for an earlier run: replaced whole, silently.
    app = tmp_path / "webapp"
    (app / "src").mkdir(parents=True)
    (app / "src" / "app.js").write_text("js")
    (app / "manifest.json").write_text('{"name": "my app", "version": "1.0"}')
    for manifest in ('{"name": "my app", "version": "1.0"}', '{"versions": {"torch": "2"}}'):
        (app / "manifest.json").write_text(manifest)
        with pytest.raises(InputError, match=r"'.*webapp' holds a manifest.json that is not camanim's: choose another --out"):
            prepare_out_dir(app)
    for manifest in ("[1, 2]", "{not json", RUN_MANIFEST[:40]):  # another tool's, or a camanim one cut short
        (app / "manifest.json").write_text(manifest)
        with pytest.raises(InputError, match=r"'.*webapp' holds a manifest.json that cannot be read as a JSON object: "
                                             r"a run replaces its folder whole; move its files or choose another --out"):
            prepare_out_dir(app)
    (app / "manifest.json").write_text('{"name": "my app"}')
    with pytest.raises(InputError, match="not camanim's"), staged_dir(app) as tmp:
        (tmp / "manifest.json").write_text(RUN_MANIFEST)
    assert (app / "src" / "app.js").read_text() == "js"


def test_an_earlier_run_holding_files_camanim_did_not_write_is_refused_and_kept(tmp_path):
    run = _run_folder(tmp_path / "run")
    assert prepare_out_dir(run) == tmp_path.resolve()  # only camanim's own files (and .DS_Store): replaced
    (run / "my_notes.txt").write_text("mine")
    (run / "frames" / "local" / "sketch.png").write_text("mine")
    with pytest.raises(InputError, match=r"holds files camanim did not write \(frames/local/sketch.png, my_notes.txt\): "
                                         r"a run replaces its folder whole; move them or choose another --out"):
        prepare_out_dir(run)
    with pytest.raises(InputError, match="did not write"), staged_dir(run) as tmp:
        (tmp / "manifest.json").write_text(RUN_MANIFEST)
    assert (run / "my_notes.txt").read_text() == "mine"


def test_a_folder_of_several_runs_is_replaced_only_with_nothing_else_in_it(tmp_path):
    top = tmp_path / "set"
    top.mkdir()
    manifest = json.dumps({"kind": "set", "versions": {"camanim": "0.1.0"},
                           "runs": [{"folder": "cat/gradcam"}, {"folder": "dog/gradcam"}]})
    (top / "manifest.json").write_text(manifest)
    (top / "index.html").write_text("x")
    for sub in ("cat", "dog"):
        (top / sub).mkdir()
        _run_folder(top / sub / "gradcam")
        for name in ("camanim_methods_grid.mp4", "camanim_methods_grid_global.mp4", "compare.html",
                     "compare_grid.mp4"):
            (top / sub / name).write_text("x")
    assert prepare_out_dir(top) == tmp_path.resolve()
    (top / "dog" / "gradcam" / "notes.md").write_text("mine")
    (top / "cat" / "plan.txt").write_text("mine")
    (top / "elsewhere").mkdir()
    with pytest.raises(InputError, match=r"did not write \(cat/plan.txt, dog/gradcam/notes.md, elsewhere\)"):
        prepare_out_dir(top)


def test_the_current_folder_or_one_holding_it_is_refused_as_output(tmp_path, monkeypatch):
    run = _run_folder(tmp_path / "run")
    (run / "sub").mkdir()
    for where, out in ((run, "."), (run, str(run)), (run / "sub", "..")):
        monkeypatch.chdir(where)
        with pytest.raises(InputError, match=r"is the current folder or holds it: a run replaces its folder whole; "
                                             r"give --out a folder outside it"):
            prepare_out_dir(out)
    assert os.path.isdir(run / "frames")


def test_real_outputs_are_replaced_by_the_next_run_to_the_same_folder(tmp_path, tiny, tiny_input):
    # what camanim itself writes (one run with its videos, GIFs and report; a set of methods with its grid
    # videos and compare page) passes the check, so running again into the same --out works
    import camanim

    one = camanim.animate(tiny, tiny_input)
    one.save(tmp_path / "one", formats=("mp4", "gif"))
    one.save(tmp_path / "one", formats=("mp4",))
    assert not (tmp_path / "one" / "camanim_local.gif").exists()
    both = camanim.animate(tiny, tiny_input, method="gradcam,hirescam")
    both.save(tmp_path / "set")
    assert any(p.name.startswith("camanim_methods_grid") for p in (tmp_path / "set").rglob("*.mp4"))
    both.save(tmp_path / "set")
    (tmp_path / "set" / "gradcam" / "mine.txt").write_text("mine")
    with pytest.raises(InputError, match=r"did not write \(gradcam/mine.txt\)"):
        both.save(tmp_path / "set")



def test_names_like_camanims_that_the_runs_manifest_does_not_account_for_are_refused(tmp_path):
    # Patterns (metric_*.csv, camanim_*.mp4, any NNNN.png) let files no camanim command wrote be deleted.
    for i, stray in enumerate(["metric_mynotes.csv", "camanim_mytalk.mp4", "frames/mine/2019.png",
                               "frames/local/12345.png", "frames/local/0001.png", "frames/local/sub/0000.png"]):
        run = _run_folder(tmp_path / f"run{i}")
        (run / stray).parent.mkdir(parents=True, exist_ok=True)
        (run / stray).write_text("mine")
        want = stray if not stray.startswith("frames/mine") else "frames/mine"
        want = "frames/local/sub" if stray.endswith("sub/0000.png") else want
        with pytest.raises(InputError, match=rf"did not write \({want}\)"):
            prepare_out_dir(run)


def test_camanims_own_leftovers_and_an_os_folder_file_do_not_block_a_rerun(tmp_path):
    run = _run_folder(tmp_path / "run")
    (run / ".report.0123456789ab.html").write_text("a killed `camanim report` left it")
    (run / "frames" / "local" / ".0000.a1b2c3d4e5f6.png").write_text("x")
    assert prepare_out_dir(run) == tmp_path.resolve()
    (run / ".notes.0123456789ab.txt").write_text("not one of camanim's names")
    with pytest.raises(InputError, match=r"did not write \(.notes.0123456789ab.txt\)"):
        prepare_out_dir(run)
    only = tmp_path / "looked-at"
    only.mkdir()
    (only / ".DS_Store").write_bytes(b"x")
    assert prepare_out_dir(only) == tmp_path.resolve()


def test_a_long_list_of_foreign_files_says_how_many_more(tmp_path):
    run = _run_folder(tmp_path / "run")
    for i in range(8):
        (run / f"note{i}.txt").write_text("mine")
    with pytest.raises(InputError, match=r"\(note0.txt, note1.txt, note2.txt, note3.txt, note4.txt and 3 more\)"):
        prepare_out_dir(run)


def test_a_symbolic_link_as_output_is_refused_and_kept(tmp_path):
    target = _run_folder(tmp_path / "target")
    (tmp_path / "link").symlink_to(target)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for link in ("link", "dangling"):
        with pytest.raises(InputError, match=rf"'.*{link}' is a symbolic link \(to '.*'\): a run replaces its folder "
                                             r"whole, which would replace the link; give the folder itself"):
            prepare_out_dir(tmp_path / link)
    assert (tmp_path / "link").is_symlink() and (target / "cams.npz").is_file()


def test_a_file_put_into_the_output_while_a_run_saves_stops_the_swap_and_is_kept(tmp_path):
    run = _run_folder(tmp_path / "run")
    with pytest.raises(InputError, match=r"did not write \(added-meanwhile.txt\)"), staged_dir(run) as tmp:
        (tmp / "manifest.json").write_text(RUN_MANIFEST)
        (run / "added-meanwhile.txt").write_text("mine")
    assert (run / "added-meanwhile.txt").read_text() == "mine" and (run / "cams.npz").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_an_output_path_through_dot_dot_is_the_folder_itself(tmp_path, monkeypatch):
    run = _run_folder(tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    with staged_dir("run/frames/..") as tmp:
        (tmp / "manifest.json").write_text(RUN_MANIFEST)
    assert sorted(p.name for p in run.iterdir()) == ["manifest.json"]


def test_one_result_saved_from_a_list_is_a_plain_run_that_saves_again(tmp_path, tiny, tiny_input):
    # A one-image list made a set whose only run is the folder itself: the set's manifest overwrote the
    # run's, `camanim road`/`report` sent the user in a circle, and a second save was refused.
    import camanim
    from camanim.rundir import read_manifest

    res = camanim.animate(tiny, [tiny_input])
    res.save(tmp_path / "one", video=False)
    assert "layers" in read_manifest(tmp_path / "one")
    res.save(tmp_path / "one", video=False)



def test_a_path_through_a_link_and_dot_dot_is_checked_and_replaced_as_one_folder(tmp_path, monkeypatch):
    # The check followed the link (elsewhere/victim: absent, so fine) and the swap did not (./victim):
    # the user's ./victim was deleted. Both now act on the folder the system names.
    (tmp_path / "elsewhere" / "sub").mkdir(parents=True)
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "thesis.tex").write_text("mine")
    (tmp_path / "lnk").symlink_to(tmp_path / "elsewhere" / "sub")
    monkeypatch.chdir(tmp_path)
    with staged_dir("lnk/../victim") as tmp:
        (tmp / "manifest.json").write_text(RUN_MANIFEST)
    assert (tmp_path / "victim" / "thesis.tex").read_text() == "mine"
    assert (tmp_path / "elsewhere" / "victim" / "manifest.json").is_file()
    # a link on the path to an earlier run is that run; the folder the link sits in is untouched
    run = _run_folder(tmp_path / "r1")
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    (work / "fl").symlink_to(run / "frames")
    monkeypatch.chdir(work)
    with staged_dir("fl/..") as tmp:
        (tmp / "manifest.json").write_text(RUN_MANIFEST)
    assert (work / "notes.txt").read_text() == "mine" and sorted(p.name for p in run.iterdir()) == ["manifest.json"]


def test_folders_named_like_os_files_are_not_os_files(tmp_path):
    only = tmp_path / "only"
    (only / "desktop.ini").mkdir(parents=True)
    (only / "desktop.ini" / "mine.txt").write_text("mine")
    with pytest.raises(InputError, match=r"is not empty \(desktop.ini\) and not a camanim run"):
        prepare_out_dir(only)
    run = _run_folder(tmp_path / "run")
    (run / "frames" / "Thumbs.db").mkdir()
    with pytest.raises(InputError, match=r"did not write \(frames/Thumbs.db\)"):
        prepare_out_dir(run)


def test_a_parent_that_is_a_file_is_named(tmp_path):
    _run_folder(tmp_path / "r1")
    with pytest.raises(InputError, match=r"output '.*r1/manifest.json/x': '.*r1/manifest.json' is a file: give a folder"):
        prepare_out_dir(tmp_path / "r1" / "manifest.json" / "x")


def test_a_one_image_list_saved_by_an_older_camanim_saves_again_and_road_says_what_happened(tmp_path, tiny, tiny_input):
    import camanim
    from camanim.rundir import read_manifest

    res = camanim.animate(tiny, tiny_input)
    res.save(tmp_path / "old", video=False)
    legacy = {"kind": "set", "versions": {"camanim": "0.1.0"}, "runs": [{"folder": "."}], "grids": []}
    (tmp_path / "old" / "manifest.json").write_text(json.dumps(legacy))  # what the older save left
    with pytest.raises(InputError, match=r"was saved by an older camanim from a one-image list: .* save it again"):
        read_manifest(tmp_path / "old")
    res.save(tmp_path / "old", video=False)
    assert "layers" in read_manifest(tmp_path / "old")


def test_the_metrics_an_older_folder_may_hold_are_the_metrics_camanim_has():
    from camanim.metrics import EXTRA
    from camanim.rundir.outdir import METRIC_NAMES

    assert tuple(METRIC_NAMES) == tuple(EXTRA)
