"""The Ray runner: one Ray actor per worker, each holding an :class:`~camanim.sweep.work.ItemWorker`
(its models loaded once); items are handed to the actor that finishes first.

Ray is imported here only, and only when a sweep asks for it (``--ray``): ``import camanim`` never
loads it. ``address="auto"`` joins the cluster running on this machine (``RAY_ADDRESS``, refused in one
line when nothing answers there, else the one the last ``ray start`` recorded) or, when none answers,
starts a local one on 127.0.0.1 only, without a dashboard; any other ``HOST:PORT`` joins that cluster. Before Ray is even imported, the address's port
must answer a plain TCP connection within :data:`CONNECT_TIMEOUT_S` (Ray itself would wait on a dead
address without end). A loopback address (127.0.0.1, ``localhost``, ::1), and the local cluster of
``auto``, run in Ray's loopback mode (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``; on Linux Ray otherwise
turns 127.0.0.1 into the machine's interface address, ``services.resolve_ip_for_localhost``, and a
local cluster listens on every interface), restored once the sweep has left the cluster. Usage
statistics are off unless the user turned them on. Ray's token authentication applies as Ray reads
it (``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN_PATH``; a token it cannot find, or one the cluster refuses,
is one line). See ``tests/sweep/test_cluster.py``.
An actor that dies mid-item (killed, its node lost) is replaced and the item handed on; an item
whose actor died :data:`~camanim.sweep.pool.MAX_ATTEMPTS` times is recorded as failed.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import InputError
from .items import SweepItem
from .pool import MAX_ATTEMPTS, OnResult, died, environ_set
from .work import ItemWorker, SweepSettings, one_line

#: the Ray namespace of the sweep's actors, named ``camanim-sweep-<run>-<i>``
NAMESPACE = "camanim"
#: seconds a cluster's port has to answer a TCP connection before ``--ray ADDRESS`` is refused
CONNECT_TIMEOUT_S = 3.0
#: Ray's switch for a loopback-only node (read when Ray is imported, and by the processes it starts)
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def host_port(address: str) -> tuple[str, int]:
    """The host and port of a ``--ray`` address (``HOST:PORT``, ``[IPv6]:PORT`` or ``ray://HOST:PORT``).

    Raises:
        InputError: the address is not of that form.
    """
    bare = address.removeprefix("ray://")
    host, sep, port = bare.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--ray '{address}' is neither auto nor HOST:PORT: give e.g. --ray 127.0.0.1:6379 "
                         "or --ray auto")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """``host`` is this machine's loopback (``localhost``, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def answers(host: str, port: int, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """A TCP connection to ``host:port`` is accepted within ``timeout`` seconds (nothing is sent)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def check_address(address: str) -> None:
    """Refuse a ``--ray HOST:PORT`` where nothing answers, at once and before Ray is imported; ``auto``
    with ``RAY_ADDRESS`` set is checked the same way (the user named that cluster: starting a local one
    instead would be a silent change), ``auto`` without it is accepted (it starts a local cluster when
    none answers).

    Raises:
        InputError: the address (or ``RAY_ADDRESS``) is malformed, or nothing accepts a connection at it.
    """
    if address == "auto":
        named = os.environ.get("RAY_ADDRESS", "").strip()
        if named in ("", "auto", "local"):
            return
        try:
            host, port = host_port(named)
        except InputError:
            raise InputError(f"RAY_ADDRESS={named} is not HOST:PORT: unset RAY_ADDRESS to start a local one, "
                             "or set it to the cluster's address") from None
        if not answers(host, port):
            raise InputError(f"RAY_ADDRESS={named}: no Ray cluster answers there; unset RAY_ADDRESS to start a "
                             "local one, or start the cluster")
        return
    host, port = host_port(address)
    if not answers(host, port):
        raise InputError(f"no Ray cluster answers at {address}: start one with `ray start --head --port={port}` "
                         "or use --ray auto")


@contextmanager
def loopback_mode(on: bool) -> Iterator[None]:
    """Ray's loopback mode while the block runs (``on``): the environment switch for the processes Ray
    starts, and Ray's constant in this process (which Ray read from that switch when it was imported,
    so setting the switch alone would come too late); both restored after."""
    if not on:
        yield
        return
    import ray._private.ray_constants as constants

    before = constants.ENABLE_RAY_CLUSTER
    with environ_set(LOOPBACK_ENV, "0"):
        constants.ENABLE_RAY_CLUSTER = False
        try:
            yield
        finally:
            constants.ENABLE_RAY_CLUSTER = before


def _auto_target() -> str | None:
    """The running cluster ``auto`` joins (``RAY_ADDRESS``, else the last ``ray start``'s), if it answers;
    None: start a local one."""
    from ray._private import services

    try:
        found = services.get_ray_address_from_environment(None, None)
    except (ConnectionError, OSError, ValueError):
        return None
    if not found or found in ("auto", "local"):
        return None
    try:
        host, port = host_port(found)
    except InputError:
        return None
    return found if answers(host, port) else None


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
    check_address(address)
    target = None if address == "auto" else address
    ray = _ray()
    from ray import exceptions

    started = not ray.is_initialized()
    if address == "auto" and started:
        target = _auto_target()
    loopback = target is None or is_loopback(host_port(target)[0])
    with loopback_mode(loopback and started):
        return _run_joined(ray, exceptions, started, target, items, settings, workers, address, on_result)


def _run_joined(ray: Any, exceptions: Any, started: bool, target: str | None, items: Sequence[SweepItem],
                settings: SweepSettings, workers: int, address: str, on_result: OnResult) -> int:
    if started:
        # AuthenticationError: Ray >= 2.52 with token authentication (RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH)
        refused = getattr(exceptions, "AuthenticationError", ())
        try:
            # "local": a new cluster of this machine only (None would join the one ray start recorded)
            ray.init(address="local" if target is None else target, include_dashboard=False,
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
