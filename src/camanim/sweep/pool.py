"""The local pool: worker processes, each holding an :class:`~camanim.sweep.work.ItemWorker` (its models
loaded once), fed one item at a time as they finish.

A worker that dies mid-item (SIGKILL, out of memory, a crash in native code) is replaced and its
item given to the next free worker; an item whose worker died :data:`MAX_ATTEMPTS` times is recorded
as failed with the reason. Only the parent writes results, so every item is written once.

A worker is known dead by its pipe: only the worker holds the other end, so the end of the pipe is
its exit, whatever killed it. (Its process handle is no witness: it reads the exit from the fork
server, and a killed fork server makes every worker look dead while they compute on.) Workers ignore
SIGINT: Ctrl-C reaches the whole process group, and the parent alone stops the sweep, killing them.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from multiprocessing.connection import Connection, wait
from typing import Any

from ..errors import InputError
from .items import SweepItem
from .work import ItemWorker, SweepSettings

#: runs of one item whose worker died before it is recorded as failed
MAX_ATTEMPTS = 2

#: called in the parent with (item, result, attempts) for each finished item
OnResult = Callable[[SweepItem, dict[str, Any], int], None]


def died(item: SweepItem, how: str, attempts: int) -> dict[str, Any]:
    """The result of an item whose worker died on each of its ``attempts`` runs (``how``: the last exit)."""
    return {"image": {"key": item.key, "image": item.image, "image_sha256": item.image_sha256, "model": item.model,
                      "label": item.label, "status": "failed",
                      "error": f"the worker died while computing this item ({how}) on {attempts} attempts"},
            "layers": []}


def pool_context() -> Any:
    """The processes' start method: a fork server that has imported camanim once (a worker starts in a
    fraction of a second, and its replacement too), or spawn where there is no fork server (Windows, macOS
    without it)."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["camanim.sweep.work"])
        return ctx
    return mp.get_context("spawn")


@contextmanager
def environ_set(name: str, value: str) -> Iterator[None]:
    """``name=value`` in this process's environment (which the processes it starts inherit) while the
    block runs; the variable's previous value, or its absence, restored after."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def safe_path() -> AbstractContextManager[None]:
    """``PYTHONSAFEPATH=1`` while the block starts processes (:func:`environ_set`).

    The fork server (and, with spawn, each worker) starts as ``python -c``, which puts the working folder
    first on its ``sys.path``: a ``random.py`` or ``html.py`` there would be imported in place of the
    standard library's. Safe path leaves it out; the workers then take this process's ``sys.path``.
    """
    return environ_set("PYTHONSAFEPATH", "1")


#: the one line of a worker process that does not start (the fork server fails as it starts)
NOT_STARTED = ("the sweep's worker processes do not start: check the working folder and PYTHONPATH for files named "
               "like Python modules (random.py, html.py, ...) and that camanim imports (python -c 'import camanim')")


def _worker_main(conn: Connection, settings: SweepSettings) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it stops the workers)
    worker = ItemWorker(settings)
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if item is None:
            return
        try:
            conn.send(worker.run(item))
        except OSError:  # the parent has given this worker up (or is gone): nobody to tell
            return


class _Slot:
    def __init__(self, ctx: Any, settings: SweepSettings) -> None:
        for attempt in range(3):
            self.conn, child = ctx.Pipe()
            self.proc = ctx.Process(target=_worker_main, args=(child, settings), daemon=True, name="camanim-sweep")
            try:
                with safe_path():
                    self.proc.start()
                break
            except (EOFError, OSError):  # the fork server died as this worker was asked of it: it starts anew
                self.conn.close()
                if attempt == 2:
                    raise InputError(NOT_STARTED) from None
                time.sleep(0.2)
            finally:
                child.close()
        self.item: SweepItem | None = None

    def holds_pipe(self) -> bool:
        """The worker still holds its end of the pipe, so it lives (what it sent meanwhile is dropped)."""
        try:
            while self.conn.poll():
                self.conn.recv()
        except (EOFError, OSError):
            return False
        return True

    def stop(self, kill: bool = False) -> None:
        if kill:
            if self.proc.is_alive():
                self.proc.kill()
            elif self.holds_pipe() and hasattr(signal, "SIGKILL"):
                # its fork server is gone, so its handle says it died: it lives, and its pid is still its own
                try:
                    os.kill(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def run_pool(items: Sequence[SweepItem], settings: SweepSettings, workers: int, on_result: OnResult) -> int:
    """Compute ``items`` on ``workers`` local processes; ``on_result`` gets each one as it finishes.

    Returns:
        How many worker processes died and were replaced.

    Raises:
        InputError: a worker process does not start (:data:`NOT_STARTED`), three times in a row.
    """
    ctx = pool_context()
    queue = deque(items)
    attempts: dict[str, int] = {}
    slots: list[_Slot] = []
    restarts = 0
    ok = False
    try:
        for _ in range(max(1, min(workers, len(items)))):
            slots.append(_Slot(ctx, settings))  # in the try: a worker that does not start stops those before it
        while queue or any(s.item is not None for s in slots):
            for slot in slots:
                if slot.item is None and queue:
                    slot.item = queue.popleft()
                    attempts[slot.item.key] = attempts.get(slot.item.key, 0) + 1
                    try:
                        slot.conn.send(slot.item)
                    except OSError:
                        pass  # died while idle: seen below by its sentinel
            busy = [s for s in slots if s.item is not None]
            wait([s.conn for s in busy])  # a result, or the end of the pipe: the worker died
            for i, slot in enumerate(slots):
                item = slot.item
                if item is None or not slot.conn.poll():
                    continue
                try:
                    result = slot.conn.recv()
                except (EOFError, OSError):
                    result = None
                if result is not None:
                    slot.item = None
                    on_result(item, result, attempts[item.key])
                    continue
                restarts += 1
                slot.proc.join(timeout=5)
                code = slot.proc.exitcode
                how = (f"killed by signal {-code}" if code is not None and code < 0
                       else f"exit code {code}" if code not in (None, 255) else "its exit status lost with its fork server")
                slot.stop(kill=True)
                slots[i] = _Slot(ctx, settings)
                if attempts[item.key] >= MAX_ATTEMPTS:
                    on_result(item, died(item, how, attempts[item.key]), attempts[item.key])
                else:
                    queue.appendleft(item)
        ok = True
    finally:
        for slot in slots:
            slot.stop(kill=not ok)
    return restarts
