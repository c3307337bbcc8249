"""/healthz (the main loop is alive), /readyz (start-up is done) and /stats (the backend's
counters, where it keeps any: the udp forwarder) over HTTP, in a thread."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


class Health:
    """What the endpoints report. The main loop calls beat(); ready is set once."""

    def __init__(self, stale_after: float = 30.0) -> None:
        self.stale_after = stale_after
        self.ready = False
        self.stats: Callable[[], dict[str, Any]] | None = None  # the backend's counters, if it has any
        self._last_beat = time.monotonic()

    def beat(self) -> None:
        self._last_beat = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self._last_beat < self.stale_after


class HealthServer:
    def __init__(self, health: Health, host: str, port: int) -> None:
        handler = _handler_for(health)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="healthz", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_for(health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            if self.path == "/healthz":
                self._answer(health.alive(), "flanneld is running", "not alive")
            elif self.path == "/readyz":
                self._answer(health.ready and health.alive(), "ready", "not ready")
            elif self.path == "/stats" and health.stats is not None:
                self._reply(200, json.dumps(health.stats(), sort_keys=True), "application/json")
            else:
                self._reply(404, "not found")

        def _answer(self, ok: bool, good: str, bad: str) -> None:
            if ok:
                self._reply(200, good)
            else:
                self._reply(503, bad)

        def _reply(self, code: int, text: str, content_type: str = "text/plain") -> None:
            body = (text + "\n").encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the http.server API
            log.debug("healthz: " + format, *args)

    return Handler
