"""The etcd connection's counters (the agent's flannel_etcd_errors_total and
flannel_etcd_reconnects_total), against real refused connections: two loopback ports
nobody listens on."""

from __future__ import annotations

import socket

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import EtcdUnavailableError
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.connection import EtcdConnection, EtcdSettings


def closed_port() -> int:
    """A loopback port that was free a moment ago (bound, then closed: connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_each_failed_endpoint_is_an_error_and_each_new_client_after_a_drop_a_reconnect():
    endpoints = tuple(f"http://127.0.0.1:{closed_port()}" for _unused in range(2))
    conn = EtcdConnection(EtcdSettings(endpoints=endpoints, timeout=2))
    assert (conn.errors, conn.reconnects) == (0, 0)
    with pytest.raises(EtcdUnavailableError):
        conn.call(lambda client: client.get("/k"))
    # the first client is no reconnect; the failover to the second endpoint is
    assert (conn.errors, conn.reconnects) == (2, 1)
    with pytest.raises(EtcdUnavailableError):
        conn.call(lambda client: client.get("/k"))
    assert (conn.errors, conn.reconnects) == (4, 3)
    conn.close()
