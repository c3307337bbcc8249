"""Fixtures for the lab's own tests: labs in temporary state dirs with test prefixes.

The test labs use prefixes ``oflt-`` (shared module lab) and ``oflu-`` (short-lived
labs), never the user's ``ofl-``, so a running ``python3 -m lab up`` is left alone.
Under pytest-xdist the worker number is added (``oflt0-``).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lab import Lab  # noqa: E402


def lab_prefix(base: str) -> str:
    """A test prefix (never the user's ``ofl-``); xdist workers get their own."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return f"{base}{worker.removeprefix('gw')}-"


def _requirements() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root"
    for tool in ("ip", "etcd", "etcdctl", "unshare", "nsenter", "nc"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    if not (shutil.which("sshd") or os.path.exists("/usr/sbin/sshd")):
        return "sshd is not installed"
    return None


@pytest.fixture(scope="session", autouse=True)
def _lab_requirements() -> None:
    reason = _requirements()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Two light hosts and one etcd member, shared by a test module."""
    state = tmp_path_factory.mktemp("lab-state")
    with Lab.up(hosts=2, etcd_members=1, state_dir=state, prefix=lab_prefix("oflt")) as lab:
        yield lab


@pytest.fixture
def scratch_state(tmp_path: Path) -> Path:
    return tmp_path / "state"
