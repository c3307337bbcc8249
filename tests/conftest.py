"""Shared fixtures; the checkout is importable as ansible_collections.overlaynet.flannel.

``lab.engine`` links build/collections/ansible_collections/overlaynet/flannel to the
checkout and puts build/collections on sys.path; the same directory is the
ANSIBLE_COLLECTIONS_PATH of the ansible runs in the tests, so modules and tests import one
copy of the engine.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "tests"):  # the lab package, and tests/support
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from lab.engine import link_collection  # noqa: E402
from lab.etcd import Cluster  # noqa: E402
from lab.netns import Namespaces  # noqa: E402
from support import shared_etcd as shared_etcd_support  # noqa: E402

link_collection()


@pytest.fixture(scope="session")
def shared_etcd() -> Iterator[Cluster]:
    """One etcd member on loopback for the whole run (plain http); tests take it through
    ``etcd_server``."""
    server = Cluster.loopback().start()
    yield server
    server.close()


@pytest.fixture
def etcd_server(shared_etcd: Cluster, request: pytest.FixtureRequest) -> Cluster:
    """The shared etcd, running: one that ended under an earlier test is started again and
    how it ended goes into the run's summary (support/shared_etcd.py)."""
    shared_etcd_support.keep_running(shared_etcd, request.node.nodeid)
    return shared_etcd


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Says when the shared etcd had to be restarted, and how it had ended."""
    if shared_etcd_support.ENDINGS:
        terminalreporter.section("the shared etcd ended during the run and was restarted")
        for ending in shared_etcd_support.ENDINGS:
            terminalreporter.write_line(ending)


@pytest.fixture
def etcd_prefix(request: pytest.FixtureRequest) -> str:
    """A fresh key prefix per test, so tests share one etcd without seeing each other."""
    return f"/oflt/{request.node.name.replace('[', '_').replace(']', '_')}/{os.getpid()}"


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of the test's own (prefix oflt-), removed afterwards."""
    namespaces = Namespaces()
    try:
        yield namespaces.add(f"oflt-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    finally:
        namespaces.delete_all()


AGENT_LOG_TAIL = 40  # lines of each agent's log shown with a failing lab test


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing test that used a lab with agents (a fixture with a `logs` directory of
    agent-*.log, as lab.overlay.Overlay keeps) shows the tail of each agent's log: a fault
    seen only in CI is then explained by its report, not only by the assertion."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when != "call" or not report.failed:
        return
    for value in getattr(item, "funcargs", {}).values():
        logs = getattr(value, "logs", None)
        if not isinstance(logs, Path) or not logs.is_dir():
            continue
        for log in sorted(logs.glob("agent-*.log")):
            lines = log.read_text(errors="replace").splitlines()[-AGENT_LOG_TAIL:]
            report.sections.append((f"{log.name} (last {len(lines)} lines)", "\n".join(lines)))
