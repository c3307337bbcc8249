"""Waiting for a condition, bounded in time."""

from __future__ import annotations

import time
from collections.abc import Callable


class WaitTimeout(AssertionError):
    """A condition was not reached in time. An AssertionError, so a test that waits in vain
    fails (rather than errors) with the message."""


def wait_for(predicate: Callable[[], object], timeout: float, what: str = "condition",
             interval: float = 0.05) -> float:
    """Call *predicate* every *interval* seconds until it returns something true; return the
    seconds that took. Raise :class:`WaitTimeout` naming *what* after *timeout* seconds."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
