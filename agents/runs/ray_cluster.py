"""The Ray cluster a run uses: the one at ``RAY_ADDRESS``, else a local one on loopback.

A local Ray started the default way listens on every interface (GCS, raylet, every
worker's gRPC server): anyone on the network who reaches those ports can submit
tasks, and with ``RAY_AUTH_MODE=disabled`` nothing asks them for a token. A local
run needs none of that exposure, so :func:`init_ray` starts it with the node address
127.0.0.1, which makes every Ray process bind to loopback only.

A multi-node cluster must listen on the network; securing it (token auth, a private
network or firewall) is the cluster owner's job: docs/security.md.
"""

from __future__ import annotations

from typing import Any
from unittest import mock

LOOPBACK = "127.0.0.1"


def init_ray(**options: Any) -> None:
    """Join ``$RAY_ADDRESS``'s cluster or the one ``ray start`` started on this machine
    (as ``ray.init()`` does), else start a local one listening on loopback only; nothing
    when Ray is already initialised (the caller's own ``ray.init`` wins). ``options``
    go to ``ray.init`` (``num_cpus=2``); no dashboard and no worker logs by default."""
    import ray
    from ray._private import ray_constants
    from ray._private.services import canonicalize_bootstrap_address

    if ray.is_initialized():
        return
    options = {"include_dashboard": False, "log_to_driver": False, **options}
    if canonicalize_bootstrap_address(None) is not None:
        ray.init(**options)  # an existing cluster: its exposure is its owner's choice
        return
    # Ray maps an explicit 127.0.0.1 node address to the machine's network address
    # (``resolve_ip_for_localhost``), except where it believes no cluster is wanted: its
    # Windows/macOS default, which Linux gets from RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 at
    # import. Ray is imported long before this, so the flag is set for the start only;
    # tests/security/test_ray_loopback.py fails if a Ray upgrade changes it.
    with mock.patch.object(ray_constants, "ENABLE_RAY_CLUSTER", False):
        ray.init(_node_ip_address=LOOPBACK, **options)
