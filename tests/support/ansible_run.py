"""Run ansible-playbook against localhost with this checkout as the collection."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lab.playbook import playbook_env

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / "build" / "collections"
BIN = Path(sys.executable).parent


def ansible_env() -> dict[str, str]:
    """The environment of the tests' ansible runs: this checkout as the collection."""
    return playbook_env()


def run_playbook(playbook: Path, extra_vars: dict[str, object], netns: str | None = None,
                 timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a playbook with the local connection; the test fails with the whole output on error."""
    env = ansible_env()
    cmd = [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
           "-e", f"ansible_python_interpreter={sys.executable}",
           "-e", json.dumps(extra_vars), str(playbook)]
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        output = f"{proc.stdout[-20000:]}\n{proc.stderr[-5000:]}"
        raise AssertionError(f"{playbook.name} failed (rc={proc.returncode}):\n{output}")
    return proc
