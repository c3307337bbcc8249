"""`molecule test` of the collection-level default scenario, as a user runs it from the repo root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

pytestmark = [pytest.mark.lab, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, systemd-nspawn)")]


def test_molecule_default_scenario():
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ.get('PATH', '')}", ANSIBLE_NOCOLOR="1", PY_COLORS="0")
    proc = subprocess.run([str(bin_dir / "molecule"), "test"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=1200, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-15000:]
    assert "idempotence" in output.lower()
