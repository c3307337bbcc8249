"""The `lab` fixture: three namespace hosts, deleted afterwards even when the test fails."""

from __future__ import annotations

import os

import pytest
from backend_lab import Lab


@pytest.fixture
def lab():
    """Three hosts (h1..h3) with a container each; deleted afterwards, even on failure."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    built = Lab()
    try:
        yield built.build(3)
    finally:
        built.close()
