"""lab.procs: how a process the lab started ended, as reports say it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from lab import procs


def _ended(record: dict, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while procs.alive(record):
        assert time.monotonic() < deadline, "the process did not end"
        time.sleep(0.01)


def test_a_running_process_is_still_running(tmp_path: Path) -> None:
    record = procs.spawn(["sleep", "30"], tmp_path / "sleep.log")
    try:
        assert procs.how_it_ended(record) == "still running"
    finally:
        procs.kill_all([record], first=signal.SIGKILL)


def test_a_signal_is_named(tmp_path: Path) -> None:
    record = procs.spawn(["sleep", "30"], tmp_path / "sleep.log")
    os.kill(record["pid"], signal.SIGKILL)
    _ended(record)
    assert procs.how_it_ended(record) == "killed by SIGKILL"


def test_an_exit_code_is_given(tmp_path: Path) -> None:
    record = procs.spawn(["sh", "-c", "exit 3"], tmp_path / "sh.log")
    _ended(record)
    assert procs.how_it_ended(record) == "exited with code 3"


def test_a_process_it_did_not_start_ended_unseen() -> None:
    assert procs.how_it_ended({"pid": 2 ** 22 + 1, "start_time": 1}).startswith("ended unseen")
    assert procs.how_it_ended(None).startswith("ended unseen")
