"""/healthz under idle, trickling and too many clients: it keeps answering."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from contextlib import ExitStack

from ansible_collections.overlaynet.flannel.plugins.module_utils.agent.healthz import Health, HealthServer


def get(port: int, path: str = "/healthz") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
            return response.status, response.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode().strip()


def answers_soon(port: int, within: float = 1.0) -> bool:
    """/healthz says 200 within `within` s (a slot frees just after the server hung up)."""
    deadline = time.monotonic() + within
    while get(port) != (200, "flanneld is running"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def idle(port: int, stack: ExitStack) -> socket.socket:
    """A connection that sends half a request line and then nothing."""
    conn = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
    conn.sendall(b"GET /hea")
    return conn


def test_idle_connections_beyond_the_cap_get_503_and_healthz_answers_once_they_time_out():
    server = HealthServer(Health(), "127.0.0.1", 0, timeout=1.0, max_concurrent=3).start()
    try:
        with ExitStack() as stack:
            hogs = [idle(server.port, stack) for _hog in range(3)]
            time.sleep(0.2)  # let the server accept them all
            # All slots are held: the next request is refused at once, not queued behind them.
            t0 = time.monotonic()
            assert get(server.port) == (503, "busy")
            assert time.monotonic() - t0 < 0.5
            # The idle clients are dropped after the request timeout, freeing the slots.
            time.sleep(1.3)
            for hog in hogs:
                hog.settimeout(1)
                assert hog.recv(4096) == b""  # the server hung up
            assert answers_soon(server.port)
    finally:
        server.close()


def test_a_client_trickling_bytes_is_cut_off_at_the_timeout():
    server = HealthServer(Health(), "127.0.0.1", 0, timeout=1.0, max_concurrent=1).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
            t0 = time.monotonic()
            closed_after = None
            for byte in b"GET /healthz-and-more-and-more-and-more":
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    closed_after = time.monotonic() - t0
                    break
                conn.settimeout(0.3)
                try:
                    if conn.recv(4096) == b"":
                        closed_after = time.monotonic() - t0
                        break
                except TimeoutError:
                    pass
            # A per-recv timeout alone would never fire here (a byte arrives every 0.3 s).
            assert closed_after is not None and closed_after < 2.0, closed_after
        assert answers_soon(server.port)
    finally:
        server.close()


def test_many_idle_connections_with_the_default_limits_do_not_stop_healthz():
    server = HealthServer(Health(), "127.0.0.1", 0).start()
    try:
        with ExitStack() as stack:
            for _idle in range(50):
                idle(server.port, stack)
            time.sleep(0.2)
            status, _body = get(server.port)
            assert status == 503  # answered at once, not hung behind 50 idle clients
    finally:
        server.close()
