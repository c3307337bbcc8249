"""The agent's log: one event per line (journald-friendly), and errors of repeating jobs
logged once until they change or clear, not on every round."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("flannel-agent")


class _Formatter(logging.Formatter):
    """One event per line: embedded newlines (tracebacks) are folded."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


def setup_logging(verbosity: int, journald: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(levelname)s %(message)s" if journald else "%(asctime)s %(levelname)s %(message)s"
    handler.setFormatter(_Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbosity > 0 else logging.INFO)
    for noisy in ("pyroute2", "grpc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class RepeatingErrors:
    """The last error of each repeating job (reconcile, firewall), logged once."""

    def __init__(self) -> None:
        self._last: dict[str, str] = {}

    def failed(self, job: str, message: str) -> None:
        if self._last.get(job) != message:
            log.error("%s", message)
        self._last[job] = message

    def ok(self, job: str) -> None:
        self._last.pop(job, None)
