"""A local run's Ray (issue 29 item 6): GCS, raylet and workers listen on loopback only,
so nobody else on the network can submit tasks to it."""

from __future__ import annotations

import pytest
import ray

from agents.runs.ray_cluster import init_ray

pytestmark = pytest.mark.slow  # starts a local Ray

LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def test_a_local_ray_listens_on_loopback_only(monkeypatch):
    psutil = pytest.importorskip("psutil")
    from ray._private.services import canonicalize_bootstrap_address

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if canonicalize_bootstrap_address(None) is not None:
        pytest.skip("a `ray start` cluster runs on this machine: init_ray joins it")
    assert not ray.is_initialized()
    init_ray()
    try:
        assert ray.get(ray.remote(lambda: "worker up").remote()) == "worker up"
        processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
        listening = {
            (process.name(), connection.laddr.ip)
            for process in processes
            for connection in process.net_connections("inet")
            if connection.status == psutil.CONN_LISTEN
        }
        names = {name for name, _ in listening}
        assert {"gcs_server", "raylet"} <= names, listening
        assert all(ip in LOOPBACK for _, ip in listening), sorted(listening)
    finally:
        ray.shutdown()
