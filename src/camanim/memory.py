"""Giving memory that was freed back to the system, so a run's resident memory follows what it holds.

glibc's allocator keeps what a process frees in its heaps: after the first large free it raises its
mmap threshold, so later tensors and frames of a few MB come from the heaps too, and their memory
stays with the process once freed (partly used pages, and free space at the top below its trim
threshold). A backward that frees every layer's saved tensors while the CAMs' temporaries come
and go, and a save that draws chunk after chunk of frames on several threads, then grow the
resident set by a gigabyte that is free but never returned (BENCHMARKS.md, "Memory of a whole run").
``malloc_trim`` returns the free pages of every arena. Elsewhere (macOS, musl, Windows) nothing is done.
"""

from __future__ import annotations

import functools
import os
from typing import Any

#: give freed memory back after this many bytes have been freed (:class:`Freed`)
TRIM_EVERY = 64 * 2**20


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    """glibc, or None where there is none."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def give_back_freed() -> bool:
    """Return the allocator's free pages to the system (glibc's ``malloc_trim(0)``, every arena).

    Returns:
        True where it ran (glibc), False where there is nothing to call.
    """
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def resident() -> int | None:
    """The process's resident memory in bytes (Linux: ``/proc/self/statm``), or None where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class Freed:
    """Counts bytes freed and gives the memory back (:func:`give_back_freed`) every ``every`` bytes.

    With ``above_start``, only while the process's resident memory is above its level at
    :meth:`start` (or cannot be read): below it the work adds nothing to the peak, and pages given
    back are pages the next allocations fault in again; what was skipped goes back once at
    :meth:`finish` (the backward's sink: DenseNet161's race 1.18 -> 1.06 of torchcam's CPU).

    Args:
        every: bytes freed between two calls (:data:`TRIM_EVERY`, 64 MiB: about a millisecond's work
            each, 53 calls over EfficientNet-B7's backward at 600 px).
        above_start: give back only above the resident memory at :meth:`start`.
    """

    def __init__(self, every: int = TRIM_EVERY, above_start: bool = False) -> None:
        self.every, self.pending, self.calls = int(every), 0, 0
        self.above_start, self.start_rss, self.skipped = above_start, None, False

    def start(self) -> None:
        """Count afresh from now (with ``above_start``: the resident memory now is the level)."""
        self.pending, self.skipped = 0, False
        self.start_rss = resident() if self.above_start else None

    def add(self, nbytes: int) -> None:
        """``nbytes`` more were freed; give memory back once :attr:`every` have been."""
        self.pending += int(nbytes)
        if self.pending >= self.every:
            self.pending = 0
            now = resident() if self.start_rss is not None else None
            if now is not None and now <= self.start_rss:  # type: ignore[operator]
                self.skipped = True
                return
            self.calls += 1
            give_back_freed()

    def finish(self) -> None:
        """What was freed and not given back (skipped below the start level) goes back now, once."""
        if self.skipped:
            self.calls += 1
            give_back_freed()
        self.pending, self.skipped = 0, False
