"""Writing atomically: a file or a whole run folder appears complete, or not at all.

Every writer of a run folder goes through here: :func:`atomic_path` for one file (report,
video, manifest), :func:`replace_dir` to put a whole staged folder in place (``outdir.staged_dir``),
and the stale temporary folders a killed run leaves.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
