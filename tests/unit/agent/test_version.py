"""--version: one version (galaxy.yml's), printed before anything else is parsed or opened."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ansible_collections.overlaynet.flannel.plugins.module_utils.agent import flags
from ansible_collections.overlaynet.flannel.plugins.module_utils.version import VERSION

REPO = Path(__file__).resolve().parents[3]
LAUNCHER = REPO / "bin" / "flannel-agent"


def test_the_version_constant_is_galaxy_ymls():
    assert VERSION == str(yaml.safe_load((REPO / "galaxy.yml").read_text())["version"])


@pytest.mark.parametrize("flag", ["--version", "-version"])
def test_version_prints_it_and_exits_0_whatever_else_is_wrong(flag, tmp_path):
    # Every one of these would end a normal start (exit 2, or a wait for etcd): --version
    # must answer before any of them is looked at.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLANNELD_")}
    env.update(FLANNELD_HEALTHZ_PORT="not-a-port", FLANNELD_ETCD_ENDPOINTS="", LISTEN_FDS="3",
               LISTEN_PID=str(os.getpid()))
    result = subprocess.run([sys.executable, str(LAUNCHER), "--iface", "no-such-iface", flag, "--bogus"],
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{VERSION}\n", "")


def test_version_after_a_double_dash_is_not_a_flag():
    assert flags.asks_version(["--iface", "eth0", "--version"])
    assert not flags.asks_version(["--", "--version"])
    assert not flags.asks_version(["--versions"])


def test_help_lists_version():
    assert "--version" in flags.build_parser().format_help()
