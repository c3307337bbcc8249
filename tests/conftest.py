"""Make the checkout importable as ansible_collections.overlaynet.flannel.

A symlink build/collections/ansible_collections/overlaynet/flannel -> the checkout is
created once; the same directory is the ANSIBLE_COLLECTIONS_PATH of the ansible runs in
the tests, so modules and tests import one copy of the engine.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COLLECTIONS = REPO / "build" / "collections"


def _link_collection() -> None:
    link = COLLECTIONS / "ansible_collections" / "overlaynet" / "flannel"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(os.path.relpath(REPO, link.parent))
        except FileExistsError:
            pass  # a parallel worker made it
    if str(COLLECTIONS) not in sys.path:
        sys.path.insert(0, str(COLLECTIONS))


_link_collection()
sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.etcd_server import EtcdServer  # noqa: E402 - needs the path above
from support.namespaces import Namespaces  # noqa: E402


@pytest.fixture(scope="session")
def etcd_server():
    server = EtcdServer().start()
    yield server
    server.close()


@pytest.fixture
def etcd_prefix(request) -> str:
    """A fresh key prefix per test, so tests share one etcd without seeing each other."""
    return f"/oflt/{request.node.name.replace('[', '_').replace(']', '_')}/{os.getpid()}"


@pytest.fixture
def netns():
    """A network namespace of the test's own (prefix oflt-), removed afterwards."""
    namespaces = Namespaces()
    try:
        yield namespaces.add(f"oflt-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    finally:
        namespaces.delete_all()
