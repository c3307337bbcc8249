"""The run's shared etcd (tests/support/shared_etcd.py): one that ends under a test is started
again for the next, on the same port and data dir, and how it ended is reported."""

from __future__ import annotations

import os
import signal
import time

import pytest

from lab.etcd import Cluster
from support import shared_etcd as support

KEY = "/oflt/shared-etcd/kept"


def test_an_ended_shared_etcd_is_restarted_and_its_ending_reported(shared_etcd: Cluster,
                                                                   request: pytest.FixtureRequest) -> None:
    member = shared_etcd.members[0]
    assert member.running()
    shared_etcd.etcdctl("put", KEY, "1")
    assert member.record is not None
    os.kill(member.record["pid"], signal.SIGKILL)  # what ended it in CI is unknown: a kill stands for it
    deadline = time.monotonic() + 5
    while member.running():
        assert time.monotonic() < deadline, "etcd outlived SIGKILL"
        time.sleep(0.01)
    before = len(support.ENDINGS)
    try:
        server = request.getfixturevalue("etcd_server")
        assert server is shared_etcd and member.running()
        assert server.get_prefix(KEY) == {KEY: "1"}  # the same data dir, on the same port
        (ending,) = support.ENDINGS[before:]
        assert "killed by SIGKILL" in ending and "was still there" in ending and request.node.name in ending
    finally:
        del support.ENDINGS[before:]  # made here on purpose: not a fault of the run
