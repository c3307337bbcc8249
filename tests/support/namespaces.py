"""Network namespaces a test harness makes for itself: created with ``lo`` up, recorded in
order, and deleted (last first) by the harness's clean-up, also after a failure."""

from __future__ import annotations

import subprocess
import time


def ip(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``ip argv...``. A concurrent ``ip netns add`` briefly re-mounts /run/netns, and a
    namespace name can then fail to resolve for a moment: that one error is retried."""
    argv_full = ["ip", *argv]
    proc = subprocess.run(argv_full, capture_output=True, text=True, timeout=timeout, check=False)
    for _attempt in range(5):
        if proc.returncode == 0 or 'Invalid "netns" value' not in proc.stderr:
            break
        time.sleep(0.2)
        proc = subprocess.run(argv_full, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


class Namespaces:
    """The namespaces one harness created."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def add(self, name: str) -> str:
        ip("netns", "add", name)
        self.names.append(name)
        ip("-n", name, "link", "set", "lo", "up")
        return name

    def delete_all(self) -> None:
        for name in reversed(self.names):
            ip("netns", "del", name, check=False)
        self.names.clear()
