"""The agent's timers: named jobs on the main loop's thread, each saying when it is due again."""

from __future__ import annotations

import time
from collections.abc import Callable

Job = Callable[[], float]  # runs once; returns the seconds until it is due again


class Backoff:
    """Doubling delays from first up to limit; reset() after a success."""

    def __init__(self, first: float, limit: float) -> None:
        self.first, self.limit, self.delay = first, limit, first

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, self.limit)
        return delay

    def reset(self) -> None:
        self.delay = self.first


class Scheduler:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._due: dict[str, float] = {}

    def add(self, name: str, job: Job, first_in: float) -> None:
        """Register a job, first due in first_in seconds, unless it was already made due
        earlier (a timer made due during start-up stays due)."""
        self._jobs[name] = job
        self._due.setdefault(name, time.monotonic() + first_in)

    def due_at(self, name: str, when: float) -> None:
        """Run the job at monotonic time `when` (its next regular run is replaced)."""
        self._due[name] = when

    def due_in(self, name: str, seconds: float) -> None:
        self.due_at(name, time.monotonic() + seconds)

    def wait(self, cap: float = 1.0) -> float:
        """Seconds until the next job is due, at most cap, at least 0."""
        if not self._due:
            return cap
        return min(max(min(self._due.values()) - time.monotonic(), 0.0), cap)

    def run_due(self) -> None:
        """Run every registered job that is due, in registration order."""
        now = time.monotonic()
        for name, job in list(self._jobs.items()):
            if now >= self._due.get(name, now):
                self._due[name] = time.monotonic() + job()
