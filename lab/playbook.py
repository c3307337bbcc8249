"""ansible-playbook against a lab's inventory, as an operator runs it: the wall time, the
PLAY RECAP, and (with ``profile=True``) the wall time of every task.

The one place tests and benchmarks read a recap. The task profile comes from the callback
``lab/callback_plugins/task_profile.py`` (ansible-core ships none; ``ansible.posix``'s
``profile_tasks`` is not installed here): each task's time runs from its start to the start
of the next, over all hosts, as ``profile_tasks`` counts it.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .engine import link_collection

REPO = Path(__file__).resolve().parent.parent
CALLBACKS = Path(__file__).resolve().parent / "callback_plugins"
_RECAP_LINE = re.compile(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", re.M)


def recap(output: str) -> dict[str, dict[str, int]]:
    """host -> {ok, changed, unreachable, failed, skipped, rescued, ignored} of a run's output."""
    return {m.group(1): {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
            for m in _RECAP_LINE.finditer(output)}


@dataclass
class PlaybookRun:
    """One ``ansible-playbook`` run."""

    proc: subprocess.CompletedProcess[str]
    seconds: float
    tasks: list[dict[str, object]] = field(default_factory=list)  # {"name", "seconds"} in run order

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        return recap(self.proc.stdout)

    @property
    def changed(self) -> int:
        """``changed`` summed over the hosts."""
        return sum(h.get("changed", 0) for h in self.recap.values())

    @property
    def ok(self) -> bool:
        """Exit 0 and no host failed or unreachable."""
        hosts = self.recap
        return self.proc.returncode == 0 and bool(hosts) and all(
            h.get("failed", 0) == 0 and h.get("unreachable", 0) == 0 for h in hosts.values())

    @property
    def output(self) -> str:
        """The end of stdout and stderr, for an assertion message."""
        return self.proc.stdout[-8000:] + self.proc.stderr[-3000:]



def playbook_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the tests' and benchmarks' ansible runs: this checkout as the
    collection (build/collections), no colours, no host key prompts or retry files, the
    venv's ansible first on PATH; *extra* on top."""
    bindir = str(Path(sys.executable).parent)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(link_collection()), ANSIBLE_HOST_KEY_CHECKING="False",
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="False",
               ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
               PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    env.update(extra or {})
    return env


def run_playbook(inventory: str | os.PathLike[str], *args: str, playbook: str = "site.yml",
                 env: Mapping[str, str] | None = None, profile: bool = False, timeout: float = 900) -> PlaybookRun:
    """``ansible-playbook -i <inventory> <playbook> <args>`` from the repository root."""
    run_env = playbook_env(env)
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), playbook, *args]
    with tempfile.TemporaryDirectory(prefix="oflpb-") as tmp:
        out = Path(tmp) / "tasks.json"
        if profile:
            run_env.update(ANSIBLE_CALLBACK_PLUGINS=str(CALLBACKS), ANSIBLE_CALLBACKS_ENABLED="task_profile",
                           OFL_TASK_PROFILE=str(out))
        t0 = time.monotonic()
        proc = subprocess.run(argv, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=timeout,
                              check=False)
        seconds = time.monotonic() - t0
        tasks = json.loads(out.read_text()) if profile and out.exists() else []
    return PlaybookRun(proc, seconds, tasks)


def merged_tasks(runs: Sequence[PlaybookRun]) -> list[dict[str, object]]:
    """Per task name, the median seconds over *runs* (for a table of medians)."""
    by_name: dict[str, list[float]] = {}
    for run in runs:
        for task in run.tasks:
            by_name.setdefault(str(task["name"]), []).append(float(task["seconds"]))  # type: ignore[arg-type]
    return [{"name": name, "seconds": statistics.median(v)} for name, v in by_name.items()]


def slowest(tasks: Sequence[dict[str, object]], n: int = 8) -> list[dict[str, object]]:
    """The *n* tasks (``{"name", "seconds"}``) that took longest, slowest first."""
    return sorted(tasks, key=lambda t: -float(t["seconds"]))[:n]  # type: ignore[arg-type]
