"""The machine lab's etcd, secured by default: mutual TLS, etcd auth, stop/start of one member.

One lab for the module: ``python -m lab.machine_lab`` with 3 etcd members and no machine
(``--machines 0``: the etcd part alone, seconds instead of minutes; site.yml and molecule
run on the full secured lab). Prefix ``oflq-``, state in a temporary directory. Checks that
the members answer nothing over plain http (client and peer ports), nothing over https
without a client certificate of the lab's CA; that a reloaded lab (a new CLI process) still
runs etcdctl as root; that the modules work over mutual TLS + user/password with what the
inventory carries (the password read through its ``lookup('file')``) and fail clearly with
a wrong password or outside the prefix; that no password is in the state file or the
inventory; and that ``stop-etcd N``/``start-etcd N`` stop a member by PID and bring it
back healthy with its data.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import procs
from lab.machine_lab import MachineLab
from support.ansible_run import run_playbook

REPO = Path(__file__).resolve().parents[3]
PREFIX = "oflq-"
PLAYBOOK = Path(__file__).parent / "playbooks" / "secured_etcd.yml"

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
    pytest.mark.skipif(not (shutil.which("etcd") and shutil.which("etcdctl")), reason="needs etcd-server, etcd-client"),
]

PROBE = """
import http.client, ssl, sys
host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode == "http":
    conn = http.client.HTTPConnection(host, port, timeout=3)
else:
    ctx = ssl.create_default_context(cafile=sys.argv[4])
    if len(sys.argv) > 5:
        ctx.load_cert_chain(sys.argv[5], sys.argv[6])
    conn = http.client.HTTPSConnection(host, port, timeout=3, context=ctx)
try:
    conn.request("GET", "/version")
    r = conn.getresponse()
    print(r.status, r.read().decode(errors="replace"))
except Exception as e:
    print("ERROR", type(e).__name__, e)
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MachineLab]:
    state = tmp_path_factory.mktemp("oflq-etcd") / "state"
    lab = MachineLab(state, state / "inventory.yml", PREFIX)
    lab.up(machines=0, etcd_members=3)
    try:
        yield lab
    finally:
        MachineLab(state, state / "inventory.yml", PREFIX).down()
    assert not (state / "secrets").exists() and not (state / "pki").exists()  # down removes them


def cli(lab: MachineLab, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``python -m lab.machine_lab ...`` in a new process: the lab as reloaded from its state."""
    proc = subprocess.run([sys.executable, "-m", "lab.machine_lab", "--state-dir", str(lab.state_dir),
                           "--inventory", str(lab.inventory), "--prefix", PREFIX, *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def probe(lab: MachineLab, address: str, port: int, mode: str, *files: str) -> str:
    """GET /version from inside the first etcd member's namespace (the lab's underlay)."""
    ns = lab.state["etcd"][0]["ns"]
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", PROBE, address, str(port), mode, *files],
                          capture_output=True, text=True, timeout=30, check=True).stdout


def group_vars(lab: MachineLab) -> dict[str, Any]:
    data = yaml.safe_load(lab.inventory.read_text())
    return dict(data["all"]["children"]["flannel_hosts"]["vars"])


def test_members_serve_nothing_over_plain_http_nor_without_a_client_certificate(lab: MachineLab) -> None:
    pki = lab.state["security"]["tls"]
    for m in lab.state["etcd"]:
        for port in (2379, 2380):  # clients and peers
            out = probe(lab, m["address"], port, "http")
            assert "etcdserver" not in out and not out.startswith("200"), (m["name"], port, out)
        assert probe(lab, m["address"], 2379, "https", pki["ca"]).startswith("ERROR"), m["name"]
        ok = probe(lab, m["address"], 2379, "https", pki["ca"], pki["client_cert"], pki["client_key"])
        assert ok.startswith("200") and '"etcdserver":"3.' in ok, (m["name"], ok)
    assert group_vars(lab)["flannel_etcd_endpoints"] == [f"https://{m['address']}:2379" for m in lab.state["etcd"]]


def test_no_password_in_the_state_or_the_inventory(lab: MachineLab) -> None:
    auth = lab.state["security"]["auth"]
    assert auth["enabled"] is True
    passwords = [Path(auth[k]).read_text() for k in ("root_password_file", "password_file")]
    for path in (lab.state_file, lab.inventory):
        text = path.read_text()
        assert not [p for p in passwords if p in text], path
    for k in ("root_password_file", "password_file"):
        assert stat.S_IMODE(os.stat(auth[k]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(Path(lab.state["security"]["tls"]["ca"]).parent).st_mode) == 0o700
    hv = group_vars(lab)
    assert hv["flannel_etcd_password"] == f"{{{{ lookup('ansible.builtin.file', '{auth['password_file']}') }}}}"
    assert hv["flannel_etcd_username"] == "flannel"
    for k in ("ca", "cert", "key"):
        assert Path(hv[f"flannel_etcd_{k}_src"]).is_file()


def test_a_reloaded_lab_runs_etcdctl_as_root_and_shows_its_security(lab: MachineLab) -> None:
    cli(lab, "etcdctl", "put", "/oflq-test/k", "v")  # outside the prefix: only root may
    assert cli(lab, "etcdctl", "get", "--print-value-only", "/oflq-test/k").stdout.strip() == "v"
    assert "flannel" in cli(lab, "etcdctl", "role", "list").stdout.split()
    perms = cli(lab, "etcdctl", "role", "get", "flannel").stdout
    assert "/coreos.com/network" in perms and "/oflq-test" not in perms
    assert json.loads(cli(lab, "status").stdout)["etcd_security"] == ["auth", "tls"]


def test_modules_over_mutual_tls_and_a_password(lab: MachineLab, tmp_path: Path) -> None:
    """What the inventory carries (the password through its lookup) is enough for the modules;
    a wrong password and a prefix outside the role's grant fail; no password in the output."""
    hv = {k: v for k, v in group_vars(lab).items() if k.startswith("flannel_etcd_")}  # not its ssh settings
    first = lab.state["etcd"][0]
    password = Path(lab.state["security"]["auth"]["password_file"]).read_text()
    proc = run_playbook(PLAYBOOK, {**hv, "workdir": str(tmp_path), "public_ip": first["address"],
                                   "wrong_password": "not-" + password}, netns=first["ns"])
    out = proc.stdout + proc.stderr
    assert password not in out
    assert "rejected the credentials" in out
    assert (tmp_path / "subnet.env").read_text().count("FLANNEL_SUBNET=10.5.") == 1
    keys = cli(lab, "etcdctl", "get", "--prefix", "--keys-only", "/coreos.com/network/").stdout.split()
    assert "/coreos.com/network/config" in keys and any("/subnets/" in k for k in keys)
    assert not cli(lab, "etcdctl", "get", "--prefix", "--keys-only", "/not-flannels").stdout.strip()


def test_stop_and_start_one_member_keeps_its_data(lab: MachineLab) -> None:
    cli(lab, "etcdctl", "put", "/oflq-test/before", "1")
    pid = lab.state["etcd"][1]["process"]["pid"]
    assert "etcd2 stopped" in cli(lab, "stop-etcd", "2").stdout
    status = json.loads(cli(lab, "status").stdout)
    assert [m["alive"] for m in status["etcd"]] == [True, False, True]
    assert not procs.same_process(pid, lab.state["etcd"][1]["process"]["start_time"])
    cli(lab, "etcdctl", "put", "/oflq-test/while-down", "2")  # two of three: still a quorum
    assert "running and healthy" in cli(lab, "start-etcd", "2").stdout
    lab.state = lab.store.load() or {}
    member2 = lab.etcd_cluster().members[1]
    assert member2.running()
    # the restarted member alone (serializable read: its own data) has the old key and the one it missed
    for key, value in (("before", "1"), ("while-down", "2")):
        got = member2.run("get", "--consistency=s", "--print-value-only", f"/oflq-test/{key}").stdout.strip()
        assert got == value, (key, got)
    bad = cli(lab, "stop-etcd", "7", check=False)
    assert bad.returncode == 1 and "no etcd member 7" in bad.stderr


def test_insecure_escape_hatch(tmp_path: Path) -> None:
    """``up --insecure``: plain http, no auth, nothing of either in the inventory (a short-lived
    lab of one member, its own prefix)."""
    state = tmp_path / "state"
    base = [sys.executable, "-m", "lab.machine_lab", "--state-dir", str(state), "--inventory",
            str(state / "inventory.yml"), "--prefix", "oflqx-"]
    try:
        up = subprocess.run([*base, "up", "--machines", "0", "--etcd-members", "1", "--insecure"], cwd=REPO,
                            capture_output=True, text=True, timeout=120, check=False)
        assert up.returncode == 0, up.stdout + up.stderr
        hv = group_vars(MachineLab(state, state / "inventory.yml", "oflqx-"))
        assert hv["flannel_etcd_endpoints"] == ["http://192.168.81.2:2379"]
        assert not [k for k in hv if k.startswith(("flannel_etcd_ca", "flannel_etcd_pass", "flannel_etcd_user"))]
        assert not (state / "secrets").exists() and not (state / "pki").exists()
        get = subprocess.run([*base, "etcdctl", "user", "list"], cwd=REPO, capture_output=True, text=True,
                             timeout=60, check=False)
        assert get.returncode == 0 and get.stdout.strip() == "", get.stdout + get.stderr  # no users: auth is off
    finally:
        down = subprocess.run([*base, "down"], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
        assert down.returncode == 0, down.stderr
