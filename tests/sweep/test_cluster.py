"""The Ray runner on a real local cluster: a head (``ray start --head``) and a second node joined by
address, both on 127.0.0.1 only (every node, every listening socket, the driver), with their own temp
dirs, their own authentication token, usage statistics off and no dashboard, independent of the
user's home; each node is stopped by its own process group on every path (never ``ray stop``, which
would stop every Ray on the machine). An actor is killed mid-sweep: every item is there once, with the
numbers of the item computed alone in this process.

Why the environment below: on Linux Ray rewrites 127.0.0.1 (``--node-ip-address``, ``--address``,
``ray.init(address=...)``) to the machine's interface address (``services.resolve_ip_for_localhost``)
unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, Ray's own switch for a loopback-only cluster; under
that switch ``ray start --address`` refuses to start a second node, so the second node's ``ray start``
runs with that one refusal lifted (``JOIN``). A ``~/.ray/auth_token`` makes ``ray start --head`` turn
token authentication on by itself, which the second node and the driver then lack: every process here
gets ``RAY_AUTH_MODE=token`` and a token of its own (``RAY_AUTH_TOKEN_PATH``), and the nodes run with a
home holding a decoy token, so that a test passing here does not depend on what the user's home holds.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _sweepfixture import MODEL, SETTINGS, free_port, layer_values, live_children, reference_values

import camanim
from camanim.errors import InputError
from camanim.sweep import SweepOptions, read_table, run_sweep

pytestmark = [pytest.mark.ray, pytest.mark.slow]

#: ``ray start`` with its refusal of a second node under RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 lifted (that
#: check reads ``scripts.ray_constants`` only; every address the node resolves still comes out loopback)
JOIN = """import sys, types
import ray._private.ray_constants as constants
from ray.scripts import scripts
scripts.ray_constants = types.SimpleNamespace(**{**vars(constants), "ENABLE_RAY_CLUSTER": True})
sys.argv[0] = "ray"
scripts.main()
"""
STARTED = "Ray runtime started"


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """One node, ``ray start ... --block`` in a process group of its own; returns once it is up."""
    with log.open("wb") as f:
        proc = subprocess.Popen([*cmd, "--block"], env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + 240  # a loaded machine is slow to bring Ray's services up
    while STARTED not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(f"{' '.join(cmd[:4])} did not start: {log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    """The node's whole process group (its raylet, GCS, agents and workers): SIGTERM, then SIGKILL."""
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + grace  # its children go a moment after it
        while _group(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _group(proc.pid):
            return


def _reset_auth() -> None:
    """Make Ray in this process read RAY_AUTH_MODE and the token again (Ray's own test helper; a Ray
    without token authentication has neither)."""
    try:
        from ray._private.authentication_test_utils import reset_auth_token_state
    except ImportError:
        return
    reset_auth_token_state()


def _group(pgid: int) -> list[int]:
    """The live processes of process group ``pgid``."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.getpgid(int(name)) == pgid:
                    pids.append(int(name))
            except OSError:
                pass
    return pids


def _listening(pids: list[int]) -> set[str]:
    """The addresses on which ``pids`` listen for TCP connections (read from /proc; nothing is sent)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            pass
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                raw = bytes.fromhex(fields[1].split(":")[0])
                packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # host-order words
                ip = ipaddress.ip_address(packed)
                found.add(str(getattr(ip, "ipv4_mapped", None) or ip))
    return found


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory) -> Iterator[dict]:
    """A two-node local cluster (one CPU each) on 127.0.0.1: ``{"address": "127.0.0.1:PORT", "groups": [...]}``."""
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        pytest.skip(f"{ray_cli} not found: pip install 'camanim[ray]'")
    tmp = tmp_path_factory.mktemp("ray")
    home = tmp / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))  # a decoy: never this cluster's token
    token = tmp / "auth_token"
    token.write_text(secrets.token_hex(32))
    port = free_port()
    address = f"127.0.0.1:{port}"
    src = str(Path(camanim.__file__).parents[1])
    procs: list[subprocess.Popen] = []
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                           "RAY_AUTH_TOKEN_PATH": str(token)}.items():
            mp.setenv(key, value)
        for key in ("RAY_AUTH_TOKEN", "RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
            mp.delenv(key, raising=False)
        ray = pytest.importorskip("ray")
        import ray._private.ray_constants as constants

        # the driver (this process) as Ray has it on Linux: the sweep itself must turn loopback mode on
        mp.setattr(constants, "ENABLE_RAY_CLUSTER", True)
        _reset_auth()  # Ray reads RAY_AUTH_* once, when imported, unless told to read them again
        env = {**os.environ, "HOME": str(home), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # the nodes only
               "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)}
        common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
        try:
            procs.append(_start([str(ray_cli), "start", "--head", f"--port={port}", "--include-dashboard=false",
                                 f"--temp-dir={tmp / 'head'}", *common], env, tmp / "head.log"))
            procs.append(_start([sys.executable, "-c", JOIN, "start", f"--address={address}",
                                 f"--temp-dir={tmp / 'node'}", *common], env, tmp / "node.log"))
            yield {"address": address, "groups": [p.pid for p in procs], "home": home}
        finally:
            if ray.is_initialized():
                ray.shutdown()
            for proc in reversed(procs):
                _stop(proc)
    _reset_auth()  # back to this process's own RAY_AUTH_* settings


def test_ray_sweep_with_a_killed_actor_gives_the_pool_numbers(ray_cluster, reference, tmp_path):
    import ray

    from camanim.sweep.cluster import NAMESPACE

    out = tmp_path / "out"
    killed: list[str] = []
    seen: dict = {}
    decoy = (ray_cluster["home"] / ".ray" / "auth_token").read_text()

    def progress(done: int, total: int) -> None:
        if done == 1 and not killed:
            seen["nodes"] = [(n["NodeManagerAddress"], n["Alive"]) for n in ray.nodes()]
            seen["gcs"] = ray.get_runtime_context().gcs_address
            seen["listening"] = _listening([pid for g in ray_cluster["groups"] for pid in _group(g)])
            actors = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                      if a["namespace"] == NAMESPACE and a["name"].startswith("camanim-sweep-")]
            ray.kill(ray.get_actor(actors[0], namespace=NAMESPACE))
            killed.append(actors[0])

    summary = run_sweep([str(reference["list"])], out, SETTINGS,
                        SweepOptions(models=(MODEL,), workers=2, ray=ray_cluster["address"]), progress=progress)
    assert killed
    # two live nodes, every one of them, the GCS the driver joined and every listening socket on 127.0.0.1 only
    assert seen["nodes"] == [("127.0.0.1", True)] * 2
    assert seen["gcs"] == ray_cluster["address"]
    assert seen["listening"] and seen["listening"] <= {"127.0.0.1"}, seen["listening"]
    assert (ray_cluster["home"] / ".ray" / "auth_token").read_text() == decoy
    assert summary["restarts"] == 1 and (summary["ok"], summary["failed"]) == (3, 2)
    images = read_table(out, "images").to_pylist()
    assert sorted(r["key"] for r in images) == sorted(reference["rows"])
    assert layer_values(read_table(out, "layers").to_pylist()) == reference_values(reference)
    assert not ray.is_initialized()  # the sweep joined the cluster and left it
    import ray._private.ray_constants as constants

    # its loopback mode is over with it
    assert constants.ENABLE_RAY_CLUSTER is True and "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ


def test_a_token_ray_cannot_find_is_one_line(tmp_path):
    """Token authentication on and no token where it says (nor in the home): the one-line reason, before any
    connection is tried, and nothing written."""
    pytest.importorskip("ray")
    import ray._private.ray_constants as constants

    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(tmp_path / "no-token"),
                           "HOME": str(tmp_path), "RAY_USAGE_STATS_ENABLED": "0"}.items():
            mp.setenv(key, value)
        for key in ("RAY_AUTH_TOKEN", "RAY_ADDRESS"):
            mp.delenv(key, raising=False)
        mp.setattr(constants, "ENABLE_RAY_CLUSTER", False)
        _reset_auth()
        try:
            with socket.socket() as listener, pytest.raises(InputError) as err:  # the port answers (no Ray)
                listener.bind(("127.0.0.1", 0))
                listener.listen()
                run_sweep(["sample:cat"], tmp_path / "out", SETTINGS,
                          SweepOptions(models=(MODEL,), workers=1, ray=f"127.0.0.1:{listener.getsockname()[1]}"))
        finally:
            mp.undo()
            _reset_auth()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("--ray 127.0.0.1:") and str(tmp_path / "no-token") in message
    assert message.endswith("point RAY_AUTH_TOKEN_PATH (or RAY_AUTH_TOKEN) at the cluster's token")
    assert not (tmp_path / ".ray").exists()  # no token made in the home either
    assert not (tmp_path / "out").exists()


def test_a_loopback_address_and_autos_local_cluster_run_in_rays_loopback_mode(tmp_path, monkeypatch):
    """(review) On Linux Ray turns 127.0.0.1 into the machine's interface address, and a cluster that
    ``auto`` starts listens on every interface, unless its loopback mode is on. ``ray.init`` is replaced by a
    recorder (no cluster is started): a loopback address, and ``auto`` with no cluster to join (``RAY_TMPDIR``
    holds no ``ray start`` record), call it in loopback mode, without a dashboard, usage statistics off, and
    ``auto`` asks for a new local cluster; the mode is off again afterwards, and nothing is written."""
    ray = pytest.importorskip("ray")
    import ray._private.ray_constants as constants

    seen: list[tuple] = []

    def init(address=None, **kw) -> None:
        seen.append((address, constants.ENABLE_RAY_CLUSTER, os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"),
                     kw.get("include_dashboard"), os.environ.get("RAY_USAGE_STATS_ENABLED")))
        raise ConnectionError("recorded")

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(constants, "ENABLE_RAY_CLUSTER", True)  # Linux's default
    for key in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS", "RAY_USAGE_STATS_ENABLED"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    with socket.socket() as listener:  # something answers at the port (not Ray: init is the recorder)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        for address in (f"127.0.0.1:{port}", f"localhost:{port}", "auto"):
            with pytest.raises(InputError, match=f"--ray {address}: no Ray cluster could be joined"):
                run_sweep(["sample:cat"], tmp_path / "out", SETTINGS,
                          SweepOptions(models=(MODEL,), workers=1, ray=address))
    assert seen == [(f"127.0.0.1:{port}", False, "0", False, "0"), (f"localhost:{port}", False, "0", False, "0"),
                    ("local", False, "0", False, "0")]
    assert constants.ENABLE_RAY_CLUSTER is True and "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ
    assert not (tmp_path / "out").exists()


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (read from /proc)."""
    parents = live_children()
    out, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def test_ray_auto_starts_a_local_cluster_on_127_0_0_1_only(reference, monkeypatch):
    """``--ray auto`` with no cluster to join starts one of its own: its node, its GCS and every socket its
    processes listen on are on 127.0.0.1 (read from /proc), and it is gone after the sweep. Ray's files go
    to a temp dir of this test (``RAY_TMPDIR``, short for Ray's socket paths)."""
    import tempfile

    ray = pytest.importorskip("ray")
    import ray._private.ray_constants as constants

    root = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    out = root / "out"
    monkeypatch.setenv("RAY_TMPDIR", str(root))
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setattr(constants, "ENABLE_RAY_CLUSTER", True)  # Linux's default
    for key in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN",
                "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)
    _reset_auth()
    seen: dict = {}
    before = set(_descendants(os.getpid()))  # another test's cluster, if this module's fixture has one up

    def started() -> list[int]:
        return [p for p in _descendants(os.getpid()) if p not in before]

    def progress(done: int, total: int) -> None:
        if done == 1 and not seen:
            seen["nodes"] = [(n["NodeManagerAddress"], n["Alive"]) for n in ray.nodes()]
            seen["gcs"] = ray.get_runtime_context().gcs_address
            seen["listening"] = _listening(started())

    try:
        summary = run_sweep(["sample:rocket"], out, SETTINGS,
                            SweepOptions(models=(MODEL,), workers=1, ray="auto"), progress=progress)
        assert seen["nodes"] == [("127.0.0.1", True)]
        assert seen["gcs"].startswith("127.0.0.1:")
        assert seen["listening"] and seen["listening"] <= {"127.0.0.1"}, seen["listening"]
        assert (summary["ok"], summary["failed"]) == (1, 0)
        rows = read_table(out, "layers").to_pylist()
        key = rows[0]["key"]
        assert layer_values(rows) == layer_values(reference["rows"][key]["layers"])
        assert not ray.is_initialized()
        deadline = time.monotonic() + 20  # the cluster's processes end with it
        while time.monotonic() < deadline and _listening(started()):
            time.sleep(0.2)
        assert _listening(started()) == set()
    finally:
        if ray.is_initialized():
            ray.shutdown()
        _reset_auth()
        import shutil

        shutil.rmtree(root, ignore_errors=True)
