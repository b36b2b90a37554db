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


class Freed:
    """Counts bytes freed and gives the memory back (:func:`give_back_freed`) every ``every`` bytes.

    Args:
        every: bytes freed between two calls (:data:`TRIM_EVERY`, 64 MiB: about a millisecond's work
            each, 53 calls over EfficientNet-B7's backward at 600 px).
    """

    def __init__(self, every: int = TRIM_EVERY) -> None:
        self.every, self.pending, self.calls = int(every), 0, 0

    def add(self, nbytes: int) -> None:
        """``nbytes`` more were freed; give memory back once :attr:`every` have been."""
        self.pending += int(nbytes)
        if self.pending >= self.every:
            self.pending = 0
            self.calls += 1
            give_back_freed()
