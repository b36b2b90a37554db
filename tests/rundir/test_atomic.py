"""Atomic writes: a file appears complete, or not at all; the temporary folders a killed run left are found and removed."""

from __future__ import annotations

import json
import os

import pytest

from camanim.rundir import atomic_path, staged_dir, write_text

RUN_MANIFEST = json.dumps({"versions": {"camanim": "0.1.0"}, "layers": [{"name": "conv"}]})


def test_atomic_path_moves_into_place_only_on_success(tmp_path):
    target = tmp_path / "report.html"
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert not target.exists() and tmp.suffix == ".html"
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["report.html"]
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer died")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_write_text_replaces_and_keeps_umask_permissions(tmp_path):
    path = write_text(tmp_path / "a.json", "1")
    write_text(path, "2")
    assert path.read_text() == "2" and path.stat().st_mode & 0o044 == 0o044


def _dead_pid() -> int:
    import subprocess

    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_only_the_folders_own_stale_temp_folders_are_found_and_removed(tmp_path):

    from camanim.rundir import remove_stale_temp_dirs, stale_temp_dirs

    dead, alive = _dead_pid(), os.getppid()
    names = {
        f".run.tmp-{dead}-k2j_x9": True,      # staged by a run that was killed hard
        f".run.old-{dead}-1712345678": True,  # an earlier run moved aside, not yet removed
        f".run.tmp-{alive}-abc": False,       # a run that still goes on
        f".run2.tmp-{dead}-abc": False,       # another folder's
        f".run.tmp-b.tmp-{dead}-abc": False,  # the folder 'run.tmp-b''s
        f".run.tmp-{dead}": False,            # not a name camanim makes
        "run": False,
    }
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / ("manifest.json" if name == "run" else "frame.png")).write_text(
            RUN_MANIFEST if name == "run" else "x")
    (tmp_path / f".run.tmp-{dead}-file").write_text("a file, not a folder")
    want = sorted(tmp_path / n for n, stale in names.items() if stale)
    assert stale_temp_dirs(tmp_path / "run") == want
    assert remove_stale_temp_dirs(tmp_path / "run") == want
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {n for n, stale in names.items() if not stale} | {f".run.tmp-{dead}-file"}
    # a run to the folder removes them before it stages its own
    for name in (f".run.tmp-{dead}-zz", f".run.old-{dead}-5"):
        (tmp_path / name).mkdir()
    with staged_dir(tmp_path / "run") as tmp:
        assert tmp.name.startswith(f".run.tmp-{os.getpid()}-")
        assert not (tmp_path / f".run.tmp-{dead}-zz").exists() and not (tmp_path / f".run.old-{dead}-5").exists()
