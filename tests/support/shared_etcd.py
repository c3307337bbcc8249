"""The run's shared etcd (``etcd_server`` in tests/conftest.py): kept running between tests.

Seen once in CI: the shared member ended under some test, and every later test that used it
failed with "connection refused", none saying why. :func:`keep_running` starts an ended
member again (same port, same data dir when it is still there) and records how it had
ended, which the run's summary prints.
"""

from __future__ import annotations

from lab.etcd import Cluster
from lab.procs import how_it_ended

# How the shared etcd had ended, once per restart: printed in the run's summary.
ENDINGS: list[str] = []


def keep_running(cluster: Cluster, noticed_by: str) -> None:
    """Start *cluster*'s member again if it has ended, recording how it ended."""
    member = cluster.members[0]
    if member.running():
        return
    pid = (member.record or {}).get("pid")
    data = "still there" if member.data_dir.is_dir() else "gone"
    ENDINGS.append(f"noticed before {noticed_by}: the shared etcd (pid {pid}) {how_it_ended(member.record)}; "
                   f"its data dir {member.data_dir} was {data}; its log ended with:\n{member.tail()}")
    member.record = None
    cluster.start()
