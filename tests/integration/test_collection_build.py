"""The built tarball installs with ansible-galaxy and its modules run from there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.ansible_run import REPO

BIN = Path(sys.executable).parent


def test_build_install_and_run_from_the_installed_collection(tmp_path, etcd_server, etcd_prefix):
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path), str(REPO)],
                   check=True, capture_output=True, text=True)
    (tarball,) = tmp_path.glob("overlaynet-flannel-*.tar.gz")
    listing = subprocess.run(["tar", "-tzf", str(tarball)], check=True, capture_output=True, text=True).stdout
    assert "plugins/modules/flannel_lease.py" in listing
    assert "plugins/module_utils/etcd/registry.py" in listing
    top = {line.split("/")[0] for line in listing.splitlines()}
    assert not top & {"lab", ".venv", "build", ".ci", "bench"}
    installed = tmp_path / "collections"
    # --force: an earlier molecule run may have installed a copy in ~/.ansible/collections
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--force", "-p", str(installed),
                    str(tarball)], check=True, capture_output=True, text=True)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(installed), ANSIBLE_NOCOLOR="1")
    doc = subprocess.run([str(BIN / "ansible-doc"), "overlaynet.flannel.etcd_network_config"],
                         check=True, capture_output=True, text=True, env=env).stdout
    assert "etcd_endpoints" in doc and "subnet_len" in doc
    run = subprocess.run(
        [str(BIN / "ansible"), "localhost", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}",
         "-m", "overlaynet.flannel.etcd_network_config",
         "-a", f"network=10.9.0.0/16 etcd_endpoints={etcd_server.endpoint} etcd_prefix={etcd_prefix}"],
        capture_output=True, text=True, env=env, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "CHANGED" in run.stdout
    assert '"Network":"10.9.0.0/16"' in etcd_server.etcdctl("get", f"{etcd_prefix}/config")
