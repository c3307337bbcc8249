"""The `lab` fixture: three namespace hosts, deleted afterwards even when the test fails."""

from __future__ import annotations

import itertools
import os

import pytest

from lab.rig import Rig

_counter = itertools.count()


@pytest.fixture
def lab():
    """Three hosts (h1..h3) with a container each; deleted afterwards, even on failure."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    with Rig(f"oflb-{os.getpid()}-{next(_counter)}-") as rig:
        rig.docker_hosts(3)
        yield rig
