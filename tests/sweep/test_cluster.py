"""The Ray runner on a real local cluster: a head (``ray start --head``) and a second node joined by
address, both on 127.0.0.1 only, with their own temp dirs and usage statistics off; torn down with
``ray stop`` on every path. An actor is killed mid-sweep: every item is there once, with the numbers
of the item computed alone in this process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _sweepfixture import MODEL, SETTINGS, layer_values, reference_values

import camanim
from camanim.sweep import SweepOptions, read_table, run_sweep

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _this_machine() -> set[str]:
    """This machine's own IPv4 addresses, one per network interface (Linux ioctl SIOCGIFADDR; nothing is sent)."""
    import fcntl
    import struct

    ours = {"127.0.0.1"}
    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))
            except OSError:
                continue
            ours.add(socket.inet_ntoa(packed[20:24]))
    return ours


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory) -> Iterator[str]:
    """``127.0.0.1:PORT`` of a two-node local cluster (one CPU each)."""
    pytest.importorskip("ray")
    if not RAY.exists():
        pytest.skip(f"{RAY} not found: pip install 'camanim[ray]'")
    src = str(Path(camanim.__file__).parents[1])
    # Ray joins by 127.0.0.1, but on Linux it advertises each node under this machine's own interface
    # address instead of a loopback one (multi-node needs it): the test checks every node is this machine
    local = {"RAY_USAGE_STATS_ENABLED": "0"}
    before = {k: os.environ.get(k) for k in local}
    os.environ.update(local)
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    try:
        subprocess.run([str(RAY), "start", "--head", f"--port={port}", "--include-dashboard=false",
                        f"--temp-dir={tmp_path_factory.mktemp('rayhead')}", *common],
                       env=env, check=True, capture_output=True, timeout=180)
        node = [str(RAY), "start", f"--address={address}", f"--temp-dir={tmp_path_factory.mktemp('raynode')}", *common]
        for _ in range(2):  # a loaded machine can be slow to bring the head's services up
            joined = subprocess.run(node, env=env, capture_output=True, text=True, timeout=180)
            if joined.returncode == 0:
                break
        assert joined.returncode == 0, f"second node did not join: {joined.stderr[-2000:]}"
        yield address
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([str(RAY), "stop", "--force"], env=env, capture_output=True, timeout=180)
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_ray_sweep_with_a_killed_actor_gives_the_pool_numbers(ray_cluster, reference, tmp_path):
    import ray

    from camanim.sweep.cluster import NAMESPACE

    out = tmp_path / "out"
    killed: list[str] = []
    nodes: list[int] = []

    def progress(done: int, total: int) -> None:
        if done == 1 and not killed:
            nodes.append(len([n for n in ray.nodes() if n["Alive"]]))
            addresses = {n["NodeManagerAddress"] for n in ray.nodes()}
            assert addresses <= _this_machine(), addresses
            actors = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                      if a["namespace"] == NAMESPACE and a["name"].startswith("camanim-sweep-")]
            ray.kill(ray.get_actor(actors[0], namespace=NAMESPACE))
            killed.append(actors[0])

    summary = run_sweep([str(reference["list"])], out, SETTINGS,
                        SweepOptions(models=(MODEL,), workers=2, ray=ray_cluster), progress=progress)
    assert killed and nodes == [2]
    assert summary["restarts"] == 1 and (summary["ok"], summary["failed"]) == (3, 2)
    images = read_table(out, "images").to_pylist()
    assert sorted(r["key"] for r in images) == sorted(reference["rows"])
    assert layer_values(read_table(out, "layers").to_pylist()) == reference_values(reference)
    assert not ray.is_initialized()  # the sweep joined the cluster and left it
