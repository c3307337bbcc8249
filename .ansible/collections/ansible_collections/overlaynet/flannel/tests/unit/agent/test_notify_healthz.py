"""sd_notify datagrams and the /healthz, /readyz endpoint."""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.agent.healthz import Health, HealthServer
from ansible_collections.overlaynet.flannel.plugins.module_utils.agent.notify import Notifier


def receiver(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    return sock


def test_ready_status_and_stopping_reach_the_notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    with receiver(path) as sock:
        notifier = Notifier({"NOTIFY_SOCKET": path})
        assert notifier.ready("lease 10.5.1.0/24, 0 peer(s)")
        assert sock.recv(4096) == b"READY=1\nSTATUS=lease 10.5.1.0/24, 0 peer(s)"
        notifier.status("etcd unavailable")
        notifier.status("etcd unavailable")  # unchanged: not sent again
        notifier.stopping()
        assert sock.recv(4096) == b"STATUS=etcd unavailable"
        assert sock.recv(4096) == b"STOPPING=1"


def test_abstract_socket_address():
    name = f"oflag-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready("ok")
        assert sock.recv(4096).startswith(b"READY=1")


def test_without_notify_socket_nothing_is_sent_and_nothing_fails():
    notifier = Notifier({})
    assert notifier.ready("ok") is False
    notifier.watchdog()
    notifier.stopping()


def test_watchdog_pings_at_half_the_interval(tmp_path):
    path = str(tmp_path / "notify.sock")
    with receiver(path) as sock:
        notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())})
        assert notifier.watchdog_interval == 2.0
        notifier.watchdog()
        notifier.watchdog()  # too soon for a second ping
        assert sock.recv(4096) == b"WATCHDOG=1"
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(4096)
    # A watchdog meant for another process is not ours to feed.
    assert Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}).watchdog_interval is None


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
            return response.status, response.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode().strip()


def test_healthz_and_readyz():
    health = Health(stale_after=0.5)
    server = HealthServer(health, "127.0.0.1", 0).start()
    try:
        assert get(server.port, "/healthz") == (200, "flanneld is running")
        assert get(server.port, "/readyz") == (503, "not ready")
        health.ready = True
        assert get(server.port, "/readyz") == (200, "ready")
        assert get(server.port, "/other")[0] == 404
        health._last_beat -= 1  # the main loop stopped beating
        assert get(server.port, "/healthz") == (503, "not alive")
        assert get(server.port, "/readyz")[0] == 503
        health.beat()
        assert get(server.port, "/healthz")[0] == 200
    finally:
        server.close()
