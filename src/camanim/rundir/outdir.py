"""The output folder of a run: checked before anything is written, then staged and put in place whole.

:func:`prepare_out_dir` says whether ``--out`` may be (re)written: a run replaces its folder whole, so
an existing folder must be empty or hold an earlier camanim output and nothing else (the names that
output's own ``manifest.json`` accounts for: :func:`foreign_files`); :func:`staged_dir` writes the new
folder beside it and swaps it in when the writing succeeded, after checking the folder once more.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..draw.normalise import NORMALISATIONS
from ..errors import InputError
from . import names
from .atomic import remove_stale_temp_dirs, replace_dir
from .manifest import read_json, run_folders

#: what an operating system adds to a folder someone looked at (ignored, and deleted with the folder)
OS_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})

#: the metrics a run folder may hold files of (for folders whose manifest does not say)
METRIC_NAMES = ("deletion", "insertion", "avgdrop", "increase", "cammult")
_ANY_COUNT = -1  # a frame count a manifest does not give: any NNNN.png
_FRAME = re.compile(r"\d{4,}\.png")

# atomic_path's temporary name for NAME.EXT: .NAME.<12 hex>.EXT (left by a killed `camanim road`/`report`)
_TEMP = re.compile(r"\.(?P<stem>.+)\.[0-9a-f]{12}(?P<suffix>\.[^.]+)?")


def _run_names(manifest: Mapping[str, Any]) -> tuple[set[str], dict[str, int]]:
    """The file names a run folder with this manifest may hold, and its frame folders with their counts."""
    layers = manifest.get("layers") if isinstance(manifest.get("layers"), list) else []
    frames = manifest.get("frames") if isinstance(manifest.get("frames"), dict) else {}
    count = frames.get("count") if isinstance(frames.get("count"), int) else len(layers)
    norms = [n for n in manifest.get("normalisations") or [k for k in frames if k != "count"] if isinstance(n, str)]
    allowed = {names.MANIFEST, names.CAMS, names.REPORT, names.PARAMS_PLOT, names.TIME_PLOT, *names.YBROAD_FILES,
               names.METRICS_AGREEMENT_JSON, names.METRICS_AGREEMENT_CSV, *_compare_names()}
    allowed |= {f"{names.video_stem(kind)}.{fmt}" for kind in (*norms, names.SIDE_BY_SIDE) for fmt in names.VIDEO_FORMATS}
    metrics = manifest.get("metrics") if isinstance(manifest.get("metrics"), dict) else {}
    files = metrics.get("files") if isinstance(metrics.get("files"), dict) else {}
    allowed |= {names.metric_file(m, ext) for m in files for ext in ("csv", "json", "png")}
    return allowed, {names.frames_dir(n): count for n in norms}


def _compare_names() -> set[str]:
    """The methods grid of a folder of several runs, and ``camanim compare``'s page and grid, by that name."""
    stems = {Path(v).stem for grid in (names.GRID_VIDEO, names.COMPARE_VIDEO) for v in (grid, names.global_variant(grid))}
    return {names.COMPARE_HTML} | {f"{s}.{fmt}" for s in stems for fmt in names.VIDEO_FORMATS}


def _group_names() -> set[str]:
    """What a folder of several runs holds beside its run folders (per image and target: the methods grid)."""
    return _compare_names() | {names.INDEX, names.MANIFEST}


def _read(folder: Path) -> dict[str, Any] | None:
    """``folder``'s ``manifest.json`` as a dict, or None where it cannot be read as one."""
    try:
        manifest = read_json(folder / names.MANIFEST, "")
    except InputError:
        return None
    return manifest if isinstance(manifest, dict) else None


def _is_camanims(manifest: Mapping[str, Any] | None) -> bool:
    versions = manifest.get("versions") if manifest is not None else None
    return isinstance(versions, dict) and "camanim" in versions


def foreign_files(folder: Path, manifest: Mapping[str, Any]) -> list[str]:
    """Paths under ``folder`` (relative, ``/``-separated, sorted) that no camanim command wrote there.

    ``manifest`` is the folder's own ``manifest.json``: of one run, it accounts for the run's files
    (its frames folders and frame count, its normalisations' videos, the metrics it names, ybROAD, the
    report and its plots, ``cams.npz``); of several runs (``"kind": "set"``), for its run folders, each
    checked against its own manifest, and the grid videos, ``compare.html`` and ``index.html`` beside them.
    A killed writer's temporary copy of an accounted-for file and an operating system's folder files
    (:data:`OS_FILES`) count as camanim's.

    Returns:
        What replacing ``folder`` whole would delete that no camanim command wrote.
    """
    folder = Path(folder)
    found: list[str] = []

    def ours(name: str, allowed: set[str]) -> bool:
        m = _TEMP.fullmatch(name)
        return name in allowed or name in OS_FILES or (m is not None and m["stem"] + (m["suffix"] or "") in allowed)


    def run(rel: str, man: Mapping[str, Any] | None) -> None:
        here = folder / rel if rel else folder
        if man is None or not _is_camanims(man) or man.get("kind") == "set":
            found.append(rel or ".")
            return
        allowed, frames = _run_names(man)
        for e in sorted(here.iterdir(), key=lambda e: e.name):
            path = f"{rel}/{e.name}" if rel else e.name
            if e.is_dir() and not e.is_symlink() and e.name == names.FRAMES:
                for norm in sorted(e.iterdir(), key=lambda n: n.name):
                    key = f"{names.FRAMES}/{norm.name}"
                    if key in frames and norm.is_dir() and not norm.is_symlink():
                        count = frames[key]
                        want = {names.frame_name(i) for i in range(max(count, 0))}
                        found.extend(f"{path}/{norm.name}/{f.name}" for f in sorted(norm.iterdir(), key=lambda f: f.name)
                                     if f.is_dir() or f.is_symlink() or not (
                                         ours(f.name, want) or (count == _ANY_COUNT and _FRAME.fullmatch(f.name))))
                    elif not _os_file(norm):
                        found.append(f"{path}/{norm.name}")
            elif e.is_dir() or e.is_symlink() or not ours(e.name, allowed):
                found.append(path)

    if manifest.get("kind") != "set":
        run("", manifest)
        return sorted(found)
    listed = run_folders(manifest)
    if listed == ["."]:
        # an older camanim saved a one-image list as a set whose only run is the folder itself, its set
        # manifest written over the run's: the run's own names, with any frame count
        run("", {"versions": manifest.get("versions"), "normalisations": list(NORMALISATIONS),
                 "frames": {"count": _ANY_COUNT}, "metrics": {"files": {m: {} for m in METRIC_NAMES}}})
        return sorted(found)
    runs = {"" if (r := str(Path(f))) == "." else r for f in listed}
    above = {str(Path(*Path(r).parts[:i])) for r in runs if r for i in range(1, len(Path(r).parts))}
    group = _group_names()

    def walk(rel: str) -> None:
        for e in sorted((folder / rel if rel else folder).iterdir(), key=lambda e: e.name):
            path = f"{rel}/{e.name}" if rel else e.name
            if e.is_dir() and not e.is_symlink() and path in runs:
                run(path, _read(e))
            elif e.is_dir() and not e.is_symlink() and path in above:
                walk(path)
            elif e.is_dir() or e.is_symlink() or not ours(e.name, group):
                found.append(path)

    walk("")
    return sorted(found)


def _os_file(entry: Path) -> bool:
    """A plain file an operating system adds to a folder (:data:`OS_FILES`); a folder of that name is not one."""
    return entry.name in OS_FILES and entry.is_file() and not entry.is_symlink()


def _listed(paths: list[str], shown: int = 5) -> str:
    more = len(paths) - shown
    return ", ".join(paths[:shown]) + (f" and {more} more" if more > 0 else "")


def real_out(out: Path) -> Path:
    """The folder ``out`` names once the system follows it: symbolic links above it and ``..`` resolved
    as the file system does (``link/../x`` is the link target's sibling, not ``./x``). Checked and
    replaced as one path."""
    return Path(os.path.realpath(out))


def check_replaceable(out: Path) -> None:
    """Refuse ``out`` unless replacing it whole loses nothing camanim did not write.

    Raises:
        InputError: ``out`` is a file or a symbolic link; the current folder or a folder holding it; a
            non-empty folder without a camanim ``manifest.json`` (one that cannot be read, or another
            tool's); or an earlier camanim output holding files camanim did not write (named).
    """
    given = Path(out)
    if given.is_symlink():
        raise InputError(f"output folder '{given}' is a symbolic link (to '{os.readlink(given)}'): a run replaces its "
                         "folder whole, which would replace the link; give the folder itself or a new one with --out")
    out = real_out(given)
    for above in [out, *out.parents]:
        if above.exists() and not above.is_dir():
            raise InputError(f"output '{given}'" + (" is a file" if above == out else f": '{above}' is a file") +
                             ": give a folder path with --out")
    here = Path.cwd().resolve()
    if out == here or out in here.parents:
        raise InputError(f"output folder '{given}' is the current folder or holds it: a run replaces its folder "
                         "whole; give --out a folder outside it")
    if not out.is_dir():
        return
    held = sorted(e.name for e in out.iterdir() if not _os_file(e))
    if not held:
        return
    if names.MANIFEST not in held:
        raise InputError(f"output folder '{given}' is not empty ({_listed(held, 3)}) and not a camanim run: "
                         "choose another --out")
    manifest = _read(out)
    if manifest is None:
        raise InputError(f"output folder '{given}' holds a manifest.json that cannot be read as a JSON object: "
                         "a run replaces its folder whole; move its files or choose another --out")
    if not _is_camanims(manifest):
        raise InputError(f"output folder '{given}' holds a manifest.json that is not camanim's: choose another --out")
    foreign = foreign_files(out, manifest)
    if foreign:
        raise InputError(f"output folder '{given}' holds files camanim did not write ({_listed(foreign)}): "
                         "a run replaces its folder whole; move them or choose another --out")


def prepare_out_dir(out: Path) -> Path:
    """Check ``out`` can be (re)written (:func:`check_replaceable`) and return its parent (created if missing).

    Raises:
        InputError: what :func:`check_replaceable` raises, or the parent cannot be created or written.
    """
    out = Path(out)
    check_replaceable(out)
    parent = real_out(out).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"output folder '{out}' cannot be created ({exc.strerror}): choose a writable --out") from exc
    try:
        probe = tempfile.NamedTemporaryFile(dir=parent, prefix=".camanim-probe-", delete=True)
        probe.close()
    except OSError as exc:
        raise InputError(f"output folder '{out}' is not writable ({exc.strerror}): choose a writable --out") from exc
    return parent


@contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """Yield a fresh folder beside ``out``; it becomes ``out`` when the block succeeds, else is removed.

    ``out`` is checked before (:func:`prepare_out_dir`) and again just before the swap: a file put in
    ``out`` while the block ran stops the swap (the new folder is removed, ``out`` stays as it is). The
    block's failure includes Ctrl-C and SIGTERM (the CLI raises it as a KeyboardInterrupt); what a hard
    kill leaves behind is removed by the next run to ``out`` (:func:`remove_stale_temp_dirs`).

    Raises:
        InputError: see :func:`prepare_out_dir`.
    """
    given = Path(out)
    parent = prepare_out_dir(given)
    out = real_out(given)  # what was checked is what is replaced ("run/frames/.." is "run")
    remove_stale_temp_dirs(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would make the finished folder private
    try:
        yield tmp
        if real_out(given) != out:
            raise InputError(f"output folder '{given}' now names another folder (a link on its path changed while "
                             "the run was saving): the new output was not kept; run again")
        try:
            check_replaceable(out)
        except InputError as exc:
            raise InputError(f"{exc} (the new output was not kept: {given} is as it was)") from None
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
