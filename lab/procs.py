"""Processes of the lab: started with argv lists, stopped BY PID only.

A PID is recorded together with the process start time (field 22 of ``/proc/<pid>/stat``),
so a PID that was reused by an unrelated process after a reboot or a crash is never
signalled. A record is ``{"pid": int, "start_time": int | None, ...}``; the same check is
available for a bare ``(pid, start_time)`` pair (:func:`same_process`).
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
# How reaped children ended (pid -> returncode, negative: the signal), for reports.
_ENDED: dict[int, int] = {}


def start_time(pid: int) -> int | None:
    """Start time of *pid* in clock ticks since boot, or None when it does not exist
    (or is a zombie: dead, not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def same_process(pid: int | None, start: int | None) -> bool:
    """True when *pid* runs and is still the process that had start time *start*."""
    if not pid or start is None:
        return False
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _ENDED[pid] = child.returncode
        _CHILDREN.pop(pid, None)
        return False
    return start_time(pid) == start


def alive(record: Mapping[str, Any] | None) -> bool:
    """True when the recorded process is still the same running process."""
    if not record or not record.get("pid"):
        return False
    return same_process(int(record["pid"]), record.get("start_time"))


def how_it_ended(record: Mapping[str, Any] | None) -> str:
    """How a process this Python process started ended: ``killed by SIGKILL``, ``exited
    with code 2``; ``still running``, or ``ended unseen`` for one it did not start."""
    if alive(record):
        return "still running"
    pid = int((record or {}).get("pid") or 0)
    child = _CHILDREN.pop(pid, None)
    if child is not None:  # dead (a zombie, or being torn down: not yet reapable for a moment)
        try:
            _ENDED[pid] = child.wait(timeout=2)
        except subprocess.TimeoutExpired:
            _CHILDREN[pid] = child
            return "not running, not reaped yet"
    code = _ENDED.get(pid)
    if code is None:
        return "ended unseen (not a child of this process, or never started)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:  # a real-time signal has no name
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def record_of(pid: int) -> dict[str, Any] | None:
    st = start_time(pid)
    return None if st is None else {"pid": pid, "start_time": st}


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
    """Children of *pid*, of all its threads (``/proc/<pid>/task/*/children``)."""
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                kids += [int(p) for p in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return kids


def signal_pid(pid: int | None, start: int | None, sig: int) -> bool:
    """Send *sig* to *pid* only if it is still the process that had start time *start*."""
    if pid is None or not same_process(pid, start):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
        return True
    return False


def wait_gone(pids: Sequence[int], starts: Mapping[int, int | None], timeout: float) -> list[int]:
    """Wait until the given processes are gone (or reaped); return those still there."""
    deadline = time.monotonic() + timeout
    left = list(pids)
    while left:
        left = [pid for pid in left if same_process(pid, starts.get(pid))]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    return left


def kill_all(records: Sequence[Mapping[str, Any]], timeout: float = 5.0,
             first: signal.Signals = signal.SIGTERM) -> None:
    """Send *first* (SIGTERM) to every recorded process that is still the same process,
    SIGKILL what is left after *timeout* seconds, and wait until they are gone."""
    starts: dict[int, int | None] = {}
    for rec in records:
        if alive(rec):
            starts[int(rec["pid"])] = rec["start_time"]
    kill_pids(list(starts), starts, timeout, first)


def kill_pids(pids: Sequence[int], starts: Mapping[int, int | None] | None = None,
              timeout: float = 5.0, first: signal.Signals = signal.SIGTERM) -> None:
    """Signal the given PIDs (checked against their start times), escalate to SIGKILL."""
    if starts is None:
        starts = {pid: start_time(pid) for pid in pids}
    chosen = [p for p in pids if p > 1 and starts.get(p) is not None and p != os.getpid()]
    for pid in chosen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, first)
    left = wait_gone(chosen, starts, timeout if first != signal.SIGKILL else 2.0)
    if left:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_gone(left, starts, 5.0)
