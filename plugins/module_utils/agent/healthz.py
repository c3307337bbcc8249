"""/healthz (the main loop is alive), /readyz (start-up is done), /stats (the backend's
counters, where it keeps any: the udp forwarder) and /metrics (Prometheus' text format:
agent/exported.py) over HTTP, in a thread.

Bounded, so a slow or hostile client cannot starve it (the role binds it to 127.0.0.1, but
anything local may connect): each connection has REQUEST_TIMEOUT seconds for its whole
request (slowloris clients are dropped), and at most MAX_CONCURRENT requests are served at
once; a connection beyond that gets an immediate 503 and is closed.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import metrics

log = logging.getLogger(__name__)
REQUEST_TIMEOUT = 5.0  # seconds a connection may take to send its request and read the answer
MAX_CONCURRENT = 8  # requests served at once; more get 503 right away
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
         b"Connection: close\r\n\r\nbusy\n")


class Health:
    """What the endpoints report. The main loop calls beat(); ready is set once."""

    def __init__(self, stale_after: float = 30.0) -> None:
        self.stale_after = stale_after
        self.ready = False
        self.stats: Callable[[], dict[str, Any]] | None = None  # the backend's counters, if it has any
        self.metrics: Callable[[], str] | None = None  # the exposition text (agent/exported.py)
        self._last_beat = time.monotonic()

    def beat(self) -> None:
        self._last_beat = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self._last_beat < self.stale_after


class _BoundedServer(ThreadingHTTPServer):
    """A thread per request, but no more than `limit` at once."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], limit: int) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(limit)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            _refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # no thread started: it cannot release the slot
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def _refuse(request: socket.socket) -> None:
    """503 without reading the request; never blocks the accepting thread."""
    try:
        request.setblocking(False)
        request.send(_BUSY)
    except OSError:
        pass
    finally:
        request.close()


def _cut(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


class HealthServer:
    def __init__(self, health: Health, host: str, port: int, *, timeout: float = REQUEST_TIMEOUT,
                 max_concurrent: int = MAX_CONCURRENT) -> None:
        handler = _handler_for(health, timeout)
        self._server = _BoundedServer((host, port), handler, max_concurrent)
        # a short poll: shutdown() waits for it, and a restart (a config change) waits for shutdown()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="healthz", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _TimedHandler(BaseHTTPRequestHandler):
    timeout = REQUEST_TIMEOUT  # socket timeout of the connection: a stalled client is dropped

    def setup(self) -> None:
        super().setup()
        # The timeout bounds each recv; this bounds the whole exchange, so a client trickling
        # a byte at a time cannot hold a slot either: shutdown() wakes the blocked read.
        self._cutoff = threading.Timer(self.timeout, _cut, (self.connection,))
        self._cutoff.daemon = True
        self._cutoff.start()

    def finish(self) -> None:
        self._cutoff.cancel()
        super().finish()


def _text(text: str) -> bytes:
    return (text + "\n").encode()


def _page(health: Health, path: str) -> tuple[int, bytes, str]:
    """The answer to GET `path`: status, body, content type."""
    if path in ("/healthz", "/readyz"):
        ok = health.alive() and (path == "/healthz" or health.ready)
        good, bad = ("flanneld is running", "not alive") if path == "/healthz" else ("ready", "not ready")
        return (200, _text(good), "text/plain") if ok else (503, _text(bad), "text/plain")
    if path == "/stats" and health.stats is not None:
        return 200, _text(json.dumps(health.stats(), sort_keys=True)), "application/json"
    if path == "/metrics" and health.metrics is not None:
        return 200, health.metrics().encode(), metrics.CONTENT_TYPE
    return 404, _text("not found"), "text/plain"


def _handler_for(health: Health, request_timeout: float) -> type[BaseHTTPRequestHandler]:
    class Handler(_TimedHandler):
        timeout = request_timeout

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            try:
                answer = _page(health, self.path)
            except Exception:  # noqa: BLE001 - a bug in one page must not take the server down
                log.exception("healthz: GET %s failed", self.path)
                answer = 500, _text("internal error"), "text/plain"
            self._send(*answer)

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the http.server API
            log.debug("healthz: " + format, *args)

    return Handler
