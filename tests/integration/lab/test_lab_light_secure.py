"""The light lab with a secured etcd: ``--tls`` (mutual TLS) and ``--auth`` (etcd users).

One lab for the module (prefix ``oflk-``, temporary state dir): one light host and three
etcd members with both; a short-lived CLI lab checks ``--auth`` alone. A light host sees
the controller's files, so the inventory gives the certificate paths as they are
(``flannel_etcd_*_file``) and the password through a ``lookup('file')`` of its 0600 file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lab import Lab  # noqa: E402
from lab.overlay import Overlay  # noqa: E402

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
    pytest.mark.skipif(not (shutil.which("etcd") and shutil.which("etcdctl") and shutil.which("nsenter")),
                       reason="needs etcd-server, etcd-client, util-linux"),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    state = tmp_path_factory.mktemp("oflk-state")
    with Lab.up(hosts=1, etcd_members=3, state_dir=state, prefix="oflk-", secure=("tls", "auth")) as lab:
        yield lab


def group_vars(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text())["all"]["children"]["flannel_hosts"]["vars"])


def host_etcdctl(lab: Lab, *args: str, user: str | None = None, cert: bool = True,
                 endpoints: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """etcdctl on host h1 as a host's agent would talk to etcd (the password in the environment)."""
    sec = lab.etcd_security
    env = dict(os.environ, ETCDCTL_API="3")
    if user:
        env["ETCDCTL_USER"] = user
    argv = ["etcdctl", f"--endpoints={','.join(endpoints or lab.etcd_endpoints)}", "--dial-timeout=2s",
            "--command-timeout=3s", f"--cacert={sec['tls']['ca']}"]
    if cert:
        argv += [f"--cert={sec['tls']['client_cert']}", f"--key={sec['tls']['client_key']}"]
    return lab.run("h1", [*argv, *args], env=env, capture_output=True, text=True, check=False, timeout=30)


def test_inventory_carries_host_paths_and_the_password_lookup(lab: Lab) -> None:
    sec = lab.etcd_security
    hv = group_vars(lab.inventory_path)
    assert hv["flannel_etcd_endpoints"] == lab.etcd_endpoints and all(
        e.startswith("https://") for e in lab.etcd_endpoints)
    assert (hv["flannel_etcd_ca_file"], hv["flannel_etcd_cert_file"], hv["flannel_etcd_key_file"]) == (
        sec["tls"]["ca"], sec["tls"]["client_cert"], sec["tls"]["client_key"])
    assert hv["flannel_etcd_password"] == (
        f"{{{{ lookup('ansible.builtin.file', '{sec['auth']['password_file']}') }}}}")
    assert "flannel_etcd_allow_plaintext_password" not in hv
    auth = lab.etcd_auth
    assert auth is not None
    for path in (lab.inventory_path, lab.store.path):
        assert auth.password not in path.read_text() and auth.root_password not in path.read_text()


def test_a_host_needs_its_certificate_and_the_password(lab: Lab) -> None:
    auth = lab.etcd_auth
    assert auth is not None
    ok = host_etcdctl(lab, "put", "/coreos.com/network/oflk", "1", user=f"flannel:{auth.password}")
    assert ok.returncode == 0, ok.stderr
    outside = host_etcdctl(lab, "put", "/oflk-outside", "1", user=f"flannel:{auth.password}")
    assert outside.returncode != 0 and "permission denied" in outside.stderr
    wrong = host_etcdctl(lab, "get", "/coreos.com/network/oflk", user="flannel:wrong")
    assert wrong.returncode != 0 and "authentication failed" in wrong.stderr
    nocert = host_etcdctl(lab, "get", "/coreos.com/network/oflk", user=f"flannel:{auth.password}", cert=False)
    assert nocert.returncode != 0
    plain = [e.replace("https://", "http://") for e in lab.etcd_endpoints]
    clear = host_etcdctl(lab, "get", "/coreos.com/network/oflk", user=f"flannel:{auth.password}", endpoints=plain)
    assert clear.returncode != 0


def test_the_agent_runs_over_mutual_tls_and_auth(lab: Lab, tmp_path: Path) -> None:
    """The real agent on h1 (lab.overlay) with the lab's certificates and the password in its
    environment: it takes a lease and writes its subnet file; the password is not in its argv."""
    auth = lab.etcd_auth
    assert auth is not None
    overlay = Overlay(lab, {"Type": "vxlan"}, tmp_path)
    overlay.put_config()
    try:
        overlay.start_agent("h1")
        key, lease = overlay.lease_of("h1")
        assert lease["PublicIP"] == lab.host_address("h1")
        assert overlay.flannel_subnet("h1").startswith(key.split("-")[0].rsplit(".", 1)[0])
        cmdline = Path(f"/proc/{overlay.agent_pid('h1')}/cmdline").read_bytes().decode()
        assert "--etcd-certfile=" in cmdline and auth.password not in cmdline
    finally:
        overlay.stop_all()


def test_stop_and_start_etcd_with_tls_and_auth(lab: Lab) -> None:
    lab.etcdctl("put", "/oflk-test/persist", "kept")
    lab.stop_etcd(2)
    assert not lab.etcd_running(2)
    lab.etcdctl("put", "/oflk-test/missed", "caught up")  # a quorum of two, as root over mTLS
    lab.start_etcd(2)  # waits until it answers endpoint health (as root, with the client certificate)
    assert lab.etcd_running(2)
    member2 = lab.refresh()._etcd().members[1]
    for key, value in (("persist", "kept"), ("missed", "caught up")):
        got = member2.run("get", "--consistency=s", "--print-value-only", f"/oflk-test/{key}").stdout.strip()
        assert got == value


def test_cli_auth_without_tls(tmp_path: Path) -> None:
    """``--auth`` alone: http endpoints, and an inventory that says the password goes in clear."""
    base = [sys.executable, "-m", "lab", "--state-dir", str(tmp_path / "s"), "--prefix", "oflkx-"]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*base, *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    try:
        cli("up", "--hosts", "0", "--auth")
        hv = group_vars(tmp_path / "s" / "inventory.yml")
        assert hv["flannel_etcd_endpoints"][0].startswith("http://")
        assert hv["flannel_etcd_allow_plaintext_password"] is True and hv["flannel_etcd_username"] == "flannel"
        assert "flannel_etcd_ca_file" not in hv
        status = json.loads(cli("status", "--json").stdout)
        assert all(m["running"] for m in status["etcd"].values())
        lab = Lab(state_dir=tmp_path / "s")
        assert lab.etcdctl("user", "list").split() == ["flannel", "root"]  # as root
        anonymous = lab.run("etcd1", ["etcdctl", f"--endpoints={lab.etcd_endpoints[0]}", "get", "/x"],
                            env=dict(os.environ, ETCDCTL_API="3"), capture_output=True, text=True, check=False)
        assert anonymous.returncode != 0 and "user name is empty" in anonymous.stderr  # auth is on
    finally:
        cli("down")
    assert not (tmp_path / "s" / "secrets").exists()  # down removes the password files too
