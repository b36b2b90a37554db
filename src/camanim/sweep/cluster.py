"""The Ray runner: one Ray actor per worker, each holding an :class:`~camanim.sweep.work.ItemWorker`
(its models loaded once); items are handed to the actor that finishes first.

Ray is imported here only, and only when a sweep asks for it (``--ray``): ``import camanim`` never
loads it. ``address="auto"`` joins the cluster running on this machine (``ray start``) or starts a
local one; any other address joins that cluster. Usage statistics are off unless the user turned them on.
Ray's own environment applies as it is: token authentication (``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN_PATH``;
a token it cannot find, or one the cluster refuses, is one line), and on Linux ``127.0.0.1`` becomes the
machine's interface address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (see ``tests/sweep/test_cluster.py``).
An actor that dies mid-item (killed, its node lost) is replaced and the item handed on; an item
whose actor died :data:`~camanim.sweep.pool.MAX_ATTEMPTS` times is recorded as failed.
"""

from __future__ import annotations

import os
import secrets
from collections import deque
from collections.abc import Sequence
from typing import Any

from ..errors import InputError
from .items import SweepItem
from .pool import MAX_ATTEMPTS, OnResult, died
from .work import ItemWorker, SweepSettings, one_line

#: the Ray namespace of the sweep's actors, named ``camanim-sweep-<run>-<i>``
NAMESPACE = "camanim"


def _ray() -> Any:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'camanim[ray]' (or pip install ray)") from None
    return ray


def run_ray(items: Sequence[SweepItem], settings: SweepSettings, workers: int, address: str,
            on_result: OnResult) -> int:
    """Compute ``items`` on ``workers`` Ray actors of the cluster at ``address`` (``auto``: this machine's).

    Returns:
        How many actors died and were replaced.

    Raises:
        InputError: Ray is not installed, or no cluster answers at ``address``.
    """
    ray = _ray()
    from ray import exceptions

    started = not ray.is_initialized()
    if started:
        # AuthenticationError: Ray >= 2.52 with token authentication (RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH)
        refused = getattr(exceptions, "AuthenticationError", ())
        try:
            ray.init(address=None if address == "auto" else address, include_dashboard=False,
                     log_to_driver=False, logging_level="ERROR")
        except refused as exc:
            why = " ".join(str(getattr(exc, "message", exc)).split())
            raise InputError(f"--ray {address}: {why}: point RAY_AUTH_TOKEN_PATH (or RAY_AUTH_TOKEN) at the "
                             "cluster's token") from None
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise InputError(f"--ray {address}: no Ray cluster could be joined ({one_line(exc)}): start one "
                             "with 'ray start --head' or use --ray auto (a cluster with token authentication "
                             "also needs RAY_AUTH_MODE=token and its token)") from None
    run = secrets.token_hex(4)
    remote = ray.remote(num_cpus=1, max_restarts=0)(ItemWorker)
    made = [0]

    def new_actor(i: int) -> Any:
        made[0] += 1
        return remote.options(name=f"camanim-sweep-{run}-{i}-{made[0]}", namespace=NAMESPACE).remote(settings)

    actors = [new_actor(i) for i in range(max(1, min(workers, len(items))))]
    queue = deque(items)
    attempts: dict[str, int] = {}
    inflight: dict[Any, tuple[int, SweepItem]] = {}
    restarts = 0
    try:
        while queue or inflight:
            busy = {i for i, _ in inflight.values()}
            for i in range(len(actors)):
                if i not in busy and queue:
                    item = queue.popleft()
                    attempts[item.key] = attempts.get(item.key, 0) + 1
                    inflight[actors[i].run.remote(item)] = (i, item)
            ready, _ = ray.wait(list(inflight), num_returns=1)
            i, item = inflight.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except exceptions.RayActorError as exc:
                restarts += 1
                actors[i] = new_actor(i)
                if attempts[item.key] >= MAX_ATTEMPTS:
                    on_result(item, died(item, f"Ray actor died: {type(exc).__name__}", attempts[item.key]),
                              attempts[item.key])
                else:
                    queue.appendleft(item)
                continue
            on_result(item, result, attempts[item.key])
    finally:
        for actor in actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001, S110 - already gone
                pass
        if started:
            ray.shutdown()
    return restarts
