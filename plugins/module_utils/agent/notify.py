"""sd_notify over NOTIFY_SOCKET (READY=1, STATUS=, WATCHDOG=1, EXTEND_TIMEOUT_USEC=, STOPPING=1),
stdlib only. (Descriptors for the fd store go over the same socket: systemd_fds.py.)"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

from ..systemd_fds import notify_address

log = logging.getLogger(__name__)
EXTEND_BY = 30.0  # seconds each EXTEND_TIMEOUT_USEC= grants (a start-up step takes at most ~10 s)
EXTEND_EVERY = 5.0  # seconds between two of them


class Notifier:
    """Tells systemd (or whoever set NOTIFY_SOCKET) how the agent is doing; silent when unset."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.address = notify_address(environ)
        self.watchdog_interval: float | None = None
        usec = environ.get("WATCHDOG_USEC")
        pid = environ.get("WATCHDOG_PID")
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 2e6  # ping at half the timeout
        self._last_watchdog = 0.0
        self._last_extend = -EXTEND_EVERY
        self._last_status = ""
        self.is_ready = False

    def send(self, *fields: str) -> bool:
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            log.debug("sd_notify to %s failed: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        self._last_status = status
        self.is_ready = True
        return self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        if status != self._last_status:
            self._last_status = status
            self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        """Ping the watchdog when due; call it from the loop that must stay alive."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_watchdog >= self.watchdog_interval:
            self._last_watchdog = now
            self.send("WATCHDOG=1")

    def extend_start(self) -> None:
        """Before READY: push systemd's start-up deadline (TimeoutStartSec=) EXTEND_BY seconds
        past now, so waiting for etcd is not mistaken for a hung start; rate-limited. Once
        the start-up is done, the watchdog takes over."""
        if self.is_ready:
            return
        now = time.monotonic()
        if now - self._last_extend >= EXTEND_EVERY:
            self._last_extend = now
            self.send(f"EXTEND_TIMEOUT_USEC={int(EXTEND_BY * 1e6)}")

    def stopping(self) -> None:
        self.send("STOPPING=1")
