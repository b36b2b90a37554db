"""Freed memory given back to the system (glibc's ``malloc_trim``), and the counter that paces it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from camanim import memory

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


#: the pattern of a save, in a fresh process (the test process's heap holds free space of its own)
PATTERN = """
import numpy as np
from camanim import memory

def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

block = np.ones(16 * 2**20, np.uint8)
del block  # one large mmapped block freed: glibc's mmap threshold rises to its size
big = [np.ones(2 * 2**20, np.uint8) for _ in range(100)]  # 200 MiB in all, touched, now from the heap
cap = np.ones(4 * 2**20, np.uint8)  # live above them: the heap cannot shrink from its top
before = rss()
del big
kept = rss()
ran = memory.give_back_freed()
print(before, kept, rss(), ran)
"""


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_memory_glibc_keeps_after_frees_goes_back_to_the_system():
    """A large free raises glibc's mmap threshold, later buffers of a few MB come from the heap below a
    live one, and freeing them leaves the resident set where it was, until given back."""
    out = subprocess.run([sys.executable, "-c", PATTERN], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(memory.__file__).parents[1])})
    before, kept, after, ran = out.stdout.split()
    assert ran == "True"
    assert float(kept) > float(before) - 20  # freed, but kept by the allocator
    assert float(after) < float(kept) - 150, out.stdout  # given back


def test_without_glibc_nothing_is_called(monkeypatch):
    monkeypatch.setattr(memory, "_libc", lambda: None)
    assert memory.give_back_freed() is False


def test_freed_bytes_are_counted_and_memory_given_back_every_so_many(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "give_back_freed", lambda: calls.append(1) or True)
    freed = memory.Freed(every=100)
    freed.add(60)
    assert freed.calls == 0 and freed.pending == 60 and calls == []
    freed.add(50)
    assert freed.calls == 1 and freed.pending == 0 and len(calls) == 1
    freed.add(250)
    assert freed.calls == 2 and len(calls) == 2
    assert memory.Freed().every == memory.TRIM_EVERY == 64 * 2**20
