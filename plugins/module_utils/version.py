"""The collection's version, for the agent's --version and its build-info metric.

galaxy.yml's `version` is the one that ships; this constant must equal it (a unit test
compares the two, so a release that bumps one and not the other fails).
"""

from __future__ import annotations

VERSION = "0.1.0"
