"""Ansible callback: the wall time of every task of a run, as JSON in $OFL_TASK_PROFILE.

Used by lab.playbook (``profile=True``) for the converge benchmark; not part of the
collection. A task's time runs from its start to the start of the next task (or of the next
play, or the end of the run), over all hosts, as ``ansible.posix.profile_tasks`` counts it.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ansible.plugins.callback import CallbackBase  # type: ignore[import-untyped]

DOCUMENTATION = """
    name: task_profile
    type: aggregate
    short_description: the wall time of every task, as JSON
    description:
      - Writes a list of {"name", "seconds"} in run order to the file named by OFL_TASK_PROFILE.
    requirements:
      - enabled in ANSIBLE_CALLBACKS_ENABLED
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "task_profile"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._done: list[dict[str, Any]] = []
        self._current: tuple[str, float] | None = None

    def _close(self) -> None:
        if self._current is not None:
            name, started = self._current
            self._done.append({"name": name, "seconds": round(time.monotonic() - started, 3)})
            self._current = None

    def _start(self, task: Any) -> None:
        self._close()
        self._current = (task.get_name().strip() or task.action, time.monotonic())

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self._start(task)

    def v2_playbook_on_handler_task_start(self, task: Any) -> None:
        self._start(task)

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self._close()

    def v2_playbook_on_stats(self, stats: Any) -> None:
        self._close()
        path = os.environ.get("OFL_TASK_PROFILE")
        if path:
            with open(path, "w", encoding="utf-8") as fh:
                json.dump(self._done, fh)
