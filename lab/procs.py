"""Long-running lab processes: started with argv lists, stopped BY PID only.

A PID is recorded together with the process start time (field 22 of ``/proc/<pid>/stat``),
so a PID that was reused by an unrelated process after a reboot or a crash is never
signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}

# Popen objects of processes this Python process started, so they can be reaped
# (a child that is never waited for stays a zombie and still "exists").
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def start_time(pid: int) -> int | None:
    """Start time of *pid* in clock ticks since boot, or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None  # zombie: dead, not yet reaped
    return int(fields[19])


def alive(record: Mapping[str, Any] | None) -> bool:
    """True when the recorded process is still the same running process."""
    if not record or not record.get("pid"):
        return False
    pid = int(record["pid"])
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(pid, None)
        return False
    st = start_time(pid)
    return st is not None and st == record.get("start_time")


def spawn(argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Start a daemon in its own session, output appended to *log*; return its record."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=dict(env if env is not None else CLEAN_ENV), start_new_session=True,
            close_fds=True,
        )
    _CHILDREN[proc.pid] = proc
    st = start_time(proc.pid)
    return {"pid": proc.pid, "start_time": st, "argv0": os.path.basename(argv[0]),
            "log": str(log)}


def children(pid: int) -> list[int]:
    """Direct children of *pid* (``/proc/<pid>/task/<pid>/children``)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [int(p) for p in text.split()]


def record_of(pid: int) -> dict[str, Any] | None:
    st = start_time(pid)
    return None if st is None else {"pid": pid, "start_time": st}


def _wait_gone(pids: list[int], starts: dict[int, int | None], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    left = list(pids)
    while left:
        still = []
        for pid in left:
            child = _CHILDREN.get(pid)
            if child is not None:
                if child.poll() is not None:
                    _CHILDREN.pop(pid, None)
                    continue
            st = start_time(pid)
            if st is not None and st == starts[pid]:
                still.append(pid)
        left = still
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    return left


def kill_all(records: list[Mapping[str, Any]], timeout: float = 5.0,
             first: signal.Signals = signal.SIGTERM) -> None:
    """Send *first* (SIGTERM) to every recorded process that is still the same process,
    SIGKILL what is left after *timeout* seconds, and wait until they are gone."""
    starts: dict[int, int | None] = {}
    for rec in records:
        if alive(rec):
            starts[int(rec["pid"])] = rec["start_time"]
    kill_pids(list(starts), starts, timeout, first)


def kill_pids(pids: list[int], starts: dict[int, int | None] | None = None,
              timeout: float = 5.0, first: signal.Signals = signal.SIGTERM) -> None:
    """Signal the given PIDs (checked against their start times), escalate to SIGKILL."""
    if starts is None:
        starts = {pid: start_time(pid) for pid in pids}
    pids = [p for p in pids if p > 1 and starts.get(p) is not None and p != os.getpid()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, first)
    left = _wait_gone(pids, starts, timeout if first != signal.SIGKILL else 2.0)
    if left:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _wait_gone(left, starts, 5.0)
