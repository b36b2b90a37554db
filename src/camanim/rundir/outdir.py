"""The output folder of a run: checked before anything is written, then staged and put in place whole.

:func:`prepare_out_dir` says whether ``--out`` may be (re)written: a run replaces its folder whole, so
an existing folder must be empty or hold an earlier camanim output and nothing else;
:func:`staged_dir` writes the new folder beside it and swaps it in when the writing succeeded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError
from . import names
from .atomic import remove_stale_temp_dirs, replace_dir
from .manifest import camanim_manifest
from .names import MANIFEST


def prepare_out_dir(out: Path) -> Path:
    """Check ``out`` can be (re)written and return its parent (created if missing).

    A run replaces its folder whole, so an existing ``out`` must be empty, or hold an earlier
    camanim output and nothing else: its ``manifest.json`` is camanim's (a JSON object naming
    camanim's version) and every file in it is one camanim writes (:func:`names.foreign_files`).

    Raises:
        InputError: ``out`` is a file; the current folder or a folder holding it; a non-empty
            folder that is not a camanim run, or one whose ``manifest.json`` is not camanim's; an
            earlier run holding files camanim did not write (named); or its parent cannot be
            created or written.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"output '{out}' is a file: give a folder path with --out")
    here = Path.cwd().resolve()
    if out.resolve() == here or out.resolve() in here.parents:
        raise InputError(f"output folder '{out}' is the current folder or holds it: a run replaces its folder "
                         "whole; give --out a folder outside it")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MANIFEST).is_file():
            raise InputError(f"output folder '{out}' is not empty and not a camanim run: choose another --out")
        manifest = camanim_manifest(out)
        if manifest is None:
            raise InputError(f"output folder '{out}' holds a manifest.json that is not camanim's: choose another --out")
        runs = [r.get("folder") for r in manifest.get("runs", []) if isinstance(r, dict)] \
            if manifest.get("kind") == "set" else []
        foreign = names.foreign_files(out, runs)
        if foreign:
            raise InputError(f"output folder '{out}' holds files camanim did not write ({', '.join(foreign)}): "
                             "a run replaces its folder whole; move them or choose another --out")
    parent = out.resolve().parent
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

    The block's failure includes Ctrl-C and SIGTERM (the CLI raises it as a KeyboardInterrupt);
    what a hard kill leaves behind is removed by the next run to ``out`` (:func:`remove_stale_temp_dirs`).

    Raises:
        InputError: see :func:`prepare_out_dir`.
    """
    out = Path(out)
    parent = prepare_out_dir(out)
    remove_stale_temp_dirs(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would make the finished folder private
    try:
        yield tmp
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
