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


def _tracked_copy(dest: Path) -> Path:
    """The repository's tracked files (what a clean clone holds), copied to *dest*."""
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], check=True, capture_output=True).stdout
    dest.mkdir(parents=True)
    subprocess.run(f"tar -C {REPO} --null -T - -cf - | tar -C {dest} -xf -", shell=True, check=True, input=files)
    return dest


# What a working tree grows that must never ship: lab state and inventories, virtualenvs,
# build output and caches (paths as the labs, the tools and the tests create them).
_NOT_SHIPPED = ["lab/.state/state.json", "lab/.machines/state.json", "lab/inventory.yml", ".venv/bin/python",
                "build/collections/x", ".pytest_cache/v/x", ".ruff_cache/x", ".mypy_cache/x", ".hypothesis/x",
                "plugins/module_utils/__pycache__/errors.cpython-311.pyc", "tests/output/x",
                "changelogs/.plugin-cache.yaml", "bench/x.json", "build/docs/html/index.html",
                "build/docs/src/conf.py"]


def test_the_tarball_holds_no_lab_state_venv_or_caches(tmp_path):
    tree = _tracked_copy(tmp_path / "tree")
    for rel in _NOT_SHIPPED:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text("not shipped\n")
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path), str(tree)],
                   check=True, capture_output=True, text=True)
    (tarball,) = tmp_path.glob("overlaynet-flannel-*.tar.gz")
    listing = subprocess.run(["tar", "-tzf", str(tarball)], check=True, capture_output=True, text=True).stdout
    shipped = set(listing.splitlines())
    assert {"LICENSE", "README.md", "CHANGELOG.rst", "meta/execution-environment.yml", "bindep.txt",
            "requirements.txt"} <= shipped
    top_level = {rel.split("/", maxsplit=1)[0] for rel in _NOT_SHIPPED}
    leaked = sorted(path for path in shipped
                    if path in _NOT_SHIPPED or path.split("/")[0] in top_level - {"plugins", "tests", "changelogs"}
                    or "__pycache__" in path.split("/") or path.startswith("tests/output"))
    assert not leaked, leaked


def test_an_execution_environment_finds_the_collections_requirements(tmp_path):
    """ansible-builder reads meta/execution-environment.yml of the installed collection (the
    introspection a build runs) and makes a build context for an EE with the collection. The
    image itself needs a container engine, which these machines lack."""
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path), str(REPO)],
                   check=True, capture_output=True, text=True)
    (tarball,) = tmp_path.glob("overlaynet-flannel-*.tar.gz")
    installed = tmp_path / "collections"
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--force", "-p", str(installed),
                    str(tarball)], check=True, capture_output=True, text=True)
    found = subprocess.run([str(BIN / "ansible-builder"), "introspect", "--sanitize", str(installed)],
                           check=True, capture_output=True, text=True).stdout
    python_reqs = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    for req in filter(None, python_reqs):
        assert req.split(">")[0] in found, (req, found)
    assert "iproute2" in found and "iptables" in found, found

    (tmp_path / "requirements.yml").write_text(f"collections:\n  - name: {tarball}\n    type: file\n")
    (tmp_path / "execution-environment.yml").write_text(
        "version: 3\nimages:\n  base_image:\n    name: quay.io/fedora/fedora:latest\n"
        "dependencies:\n  ansible_core:\n    package_pip: ansible-core\n  ansible_runner:\n"
        "    package_pip: ansible-runner\n  galaxy: requirements.yml\n")
    context = tmp_path / "context"
    subprocess.run([str(BIN / "ansible-builder"), "create", "-f", str(tmp_path / "execution-environment.yml"),
                    "-c", str(context), "--output-filename", "Containerfile"],
                   check=True, capture_output=True, text=True, cwd=tmp_path)
    containerfile = (context / "Containerfile").read_text()
    assert "ansible-galaxy" in containerfile and "introspect" in containerfile
    assert (context / "_build" / "requirements.yml").is_file()
