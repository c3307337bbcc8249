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

link_collection()


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[Cluster]:
    """One etcd member on loopback for the whole run (plain http)."""
    server = Cluster.loopback().start()
    yield server
    server.close()


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
