"""Writing atomically: a file or a whole run folder appears complete, or not at all.

Every writer of a run folder goes through here: :func:`atomic_path` for one file (report,
video, manifest), :func:`staged_dir` for a whole folder (``camanim run``, ``CamSet.save``).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError
from .names import MANIFEST


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; move it into place only when the block succeeds.

    The suffix is kept so tools that pick a format by extension (ffmpeg) still work. The file is
    created by whoever writes it, as a plain ``open()`` would, so it gets the umask's permissions
    (``mkstemp`` would make it private, 0600). On failure the temporary file is removed.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(6)}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def prepare_out_dir(out: Path) -> Path:
    """Check ``out`` can be (re)written and return its parent (created if missing).

    Raises:
        InputError: ``out`` is a file, a non-empty folder that is not a camanim run, or its
            parent cannot be created or written.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"output '{out}' is a file: give a folder path with --out")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise InputError(f"output folder '{out}' is not empty and not a camanim run: choose another --out")
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


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (one we may not signal counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_temp_dirs(out: Path) -> list[Path]:
    """The temporary folders beside ``out`` that a run to ``out`` left when it was killed hard.

    A run stages ``out`` in ``.NAME.tmp-PID-XXXX`` and moves an earlier run aside as
    ``.NAME.old-PID-NS`` (NAME: ``out``'s name, PID: the writing process). SIGKILL or a power loss
    leaves them; they are stale when their process no longer runs. Only ``out``'s own are listed:
    another folder's (``.NAME2.tmp-...``) never matches.
    """
    out = Path(out)
    parent = out.resolve().parent
    if not parent.is_dir():
        return []
    own = re.compile(rf"\.{re.escape(out.name)}\.(?:tmp|old)-(\d+)-[A-Za-z0-9_]+")
    stale = []
    for entry in parent.iterdir():
        m = own.fullmatch(entry.name)
        if m and entry.is_dir() and not entry.is_symlink() and int(m.group(1)) != os.getpid() \
                and not _alive(int(m.group(1))):
            stale.append(entry)
    return sorted(stale)


def remove_stale_temp_dirs(out: Path) -> list[Path]:
    """Remove what :func:`stale_temp_dirs` finds beside ``out``; returns what was removed."""
    gone = stale_temp_dirs(out)
    for folder in gone:
        shutil.rmtree(folder, ignore_errors=True)
    return gone


def replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` folder to ``out``, replacing an earlier run there."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}-{time.time_ns()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


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
