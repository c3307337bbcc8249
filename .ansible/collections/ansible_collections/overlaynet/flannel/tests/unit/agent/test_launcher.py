"""bin/flannel-agent loads the engine from the checkout, FLANNEL_ENGINE_DIR or ../lib/engine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
LAUNCHER = REPO / "bin" / "flannel-agent"
ENGINE = REPO / "plugins" / "module_utils"


def launch(launcher: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "FLANNEL_ENGINE_DIR" and not k.startswith("FLANNELD_")}
    return subprocess.run([sys.executable, str(launcher), *args], env={**environ, **env},
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_launcher_is_an_executable_python_script():
    assert os.access(LAUNCHER, os.X_OK)
    assert LAUNCHER.read_text().startswith("#!/usr/bin/env python3\n")


def test_from_the_checkout():
    result = launch(LAUNCHER, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: flannel-agent" in result.stdout and "FLANNELD_" in result.stdout


def test_installed_next_to_lib_engine(tmp_path):
    (tmp_path / "bin").mkdir()
    shutil.copy2(LAUNCHER, tmp_path / "bin" / "flannel-agent")
    shutil.copytree(ENGINE, tmp_path / "lib" / "engine", ignore=shutil.ignore_patterns("__pycache__"))
    result = launch(tmp_path / "bin" / "flannel-agent", "--help")
    assert result.returncode == 0, result.stderr


def test_flannel_engine_dir_wins_and_must_hold_the_engine(tmp_path):
    shutil.copytree(ENGINE, tmp_path / "engine", ignore=shutil.ignore_patterns("__pycache__"))
    assert launch(LAUNCHER, "--help", FLANNEL_ENGINE_DIR=str(tmp_path / "engine")).returncode == 0
    result = launch(LAUNCHER, "--help", FLANNEL_ENGINE_DIR=str(tmp_path / "nothing"))
    assert result.returncode == 1
    assert "no engine found" in result.stderr and "FLANNEL_ENGINE_DIR" in result.stderr


def test_bad_flags_exit_2_and_setup_errors_exit_1_with_one_clear_line(tmp_path):
    result = launch(LAUNCHER, "--ip-masq=perhaps")
    assert result.returncode == 2 and "--ip-masq" in result.stderr
    result = launch(LAUNCHER, "--etcd-endpoints=https://127.0.0.1:1", f"--etcd-cafile={tmp_path / 'missing.pem'}",
                    f"--subnet-file={tmp_path / 'subnet.env'}")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing.pem" in lines[0] and "cannot be read" in lines[0]
