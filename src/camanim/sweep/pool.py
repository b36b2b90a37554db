"""The local pool: worker processes, each holding an :class:`~camanim.sweep.work.ItemWorker` (its models
loaded once), fed one item at a time as they finish.

A worker that dies mid-item (SIGKILL, out of memory, a crash in native code) is replaced and its
item given to the next free worker; an item whose worker died :data:`MAX_ATTEMPTS` times is recorded
as failed with the reason. Only the parent writes results, so every item is written once.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

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


def _worker_main(conn: Connection, settings: SweepSettings) -> None:
    worker = ItemWorker(settings)
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if item is None:
            return
        conn.send(worker.run(item))


class _Slot:
    def __init__(self, ctx: Any, settings: SweepSettings) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, settings), daemon=True, name="camanim-sweep")
        self.proc.start()
        child.close()
        self.item: SweepItem | None = None

    def stop(self, kill: bool = False) -> None:
        if self.proc.is_alive():
            if kill:
                self.proc.kill()
            else:
                try:
                    self.conn.send(None)
                except OSError:
                    self.proc.kill()
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def run_pool(items: Sequence[SweepItem], settings: SweepSettings, workers: int, on_result: OnResult) -> int:
    """Compute ``items`` on ``workers`` local processes; ``on_result`` gets each one as it finishes.

    Returns:
        How many worker processes died and were replaced.
    """
    ctx = pool_context()
    queue = deque(items)
    attempts: dict[str, int] = {}
    slots = [_Slot(ctx, settings) for _ in range(max(1, min(workers, len(items))))]
    restarts = 0
    ok = False
    try:
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
            wait([s.conn for s in busy] + [s.proc.sentinel for s in busy])
            for i, slot in enumerate(slots):
                item = slot.item
                if item is None:
                    continue
                result = None
                if slot.conn.poll():
                    try:
                        result = slot.conn.recv()
                    except (EOFError, OSError):
                        result = None
                if result is not None:
                    slot.item = None
                    on_result(item, result, attempts[item.key])
                    continue
                if slot.proc.is_alive():
                    continue
                restarts += 1
                how = f"exit code {slot.proc.exitcode}"
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
