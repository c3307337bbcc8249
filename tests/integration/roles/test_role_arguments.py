"""Bad role variables: one clear message naming the variable, nothing done on the host.

The roles' meta/argument_specs.yml are checked by Ansible before a role's first task; run
here against localhost with the bad value, the role must stop there (its install dir,
pointed into the test's temp dir, is never created)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.ansible_run import BIN, ansible_env

PLAYBOOK = Path(__file__).parent / "playbooks" / "role_arguments.yml"
CASES = [
    ("flannel", {"flannel_backend": {"type": "gre"}},
     r"value of type must be one of: vxlan, host-gw, udp, wireguard, got: gre"),
    ("flannel", {"flannel_etcd_endpoints": {"a": 1}},
     r"argument 'flannel_etcd_endpoints' is of type dict and we were unable to convert to list"),
    ("flannel", {"flannel_healthz_port": "nine"},
     r"argument 'flannel_healthz_port' is of type str and we were unable to convert to int"),
    ("flannel", {"flannel_backend": {"type": "vxlan", "vnii": 2}},
     r"flannel_backend\.vnii\. Supported parameters include"),
    ("docker_bridge", {"docker_bridge_install_docker": "perhaps"},
     r"argument 'docker_bridge_install_docker' is of type str and we were unable to convert to bool"),
]


@pytest.mark.parametrize(("role", "bad", "message"), CASES, ids=[next(iter(c[1])) for c in CASES])
def test_a_bad_variable_stops_the_role_before_its_first_task(tmp_path, role, bad, message):
    extra = {"role_name": role, "workdir": str(tmp_path), **bad}
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "-e", json.dumps(extra),
                           str(PLAYBOOK)], env=ansible_env(), capture_output=True, text=True, timeout=120,
                          check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Validating arguments against arg spec" in out
    assert re.search(message, out), out
    assert not (tmp_path / "install").exists()


PASSWORD = "oflk-Secret-3e1f"  # must never show up in the output


def _role_run(tmp_path: Path, extra: dict[str, object], *args: str) -> tuple[int, str]:
    extra = {"role_name": "flannel", "workdir": str(tmp_path), "flannel_etcd_username": "flannel",
             "flannel_etcd_password": PASSWORD, **extra}
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={sys.executable}", "-e", json.dumps(extra),
                           *args, str(PLAYBOOK)], env=ansible_env(), capture_output=True, text=True, timeout=120,
                          check=False)
    return proc.returncode, proc.stdout + proc.stderr


def test_a_password_over_plain_http_to_another_host_is_refused(tmp_path: Path) -> None:
    rc, out = _role_run(tmp_path, {"flannel_etcd_endpoints": ["https://10.0.0.1:2379", "http://10.0.0.2:2379"]})
    assert rc != 0, out
    # only the http:// endpoint is named, and the fix
    assert "flannel_etcd_password would travel unencrypted over http:// to 10.0.0.2. Use https://" in out, out
    assert PASSWORD not in out
    assert not (tmp_path / "install").exists() and not (tmp_path / "etc").exists()


@pytest.mark.parametrize("extra", [
    {"flannel_etcd_endpoints": ["http://10.0.0.2:2379"], "flannel_etcd_allow_plaintext_password": True},
    {"flannel_etcd_endpoints": ["https://10.0.0.1:2379", "http://127.0.0.1:2379", "http://localhost:2379"]},
], ids=["allowed", "https-or-loopback"])
def test_a_password_is_sent_where_allowed_and_never_shown(tmp_path: Path, extra: dict[str, object]) -> None:
    """Past the check the role goes on (its configure part, in check mode: nothing is written
    on this host); the password shows up nowhere, not even with --diff."""
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    rc, out = _role_run(tmp_path, {**extra, "flannel_etcd_ca_src": str(ca)},
                        "--check", "--diff", "--tags", "flannel_configure")
    assert rc == 0, out
    assert "unencrypted" not in out
    assert f"{tmp_path}/etc/pki/etcd-ca.pem" in out  # the CA would be copied into the role's pki dir
    assert PASSWORD not in out


REGEX = r'^192\.168\.8[12]{1,2}\. "q" $HOME %n'  # backslashes, a comma, quotes, '$' and '%'


def test_the_underlay_variables_reach_the_unit_as_flags_systemd_reads_back(tmp_path: Path) -> None:
    """flannel_iface as a list, flannel_iface_regex as one string (commas kept), can-reach and the
    public IPs: each one ExecStart= word, quoted so that systemd's unquoting gives the value back
    (systemd-analyze verify warns of any escape it does not know). One run: a role run costs ~15 s."""
    rc, out = _role_run(tmp_path, {"flannel_etcd_endpoints": ["http://127.0.0.1:2379"],
                                   "flannel_iface": ["eth1", "192.168.82.11"], "flannel_iface_regex": REGEX,
                                   "flannel_iface_can_reach": "10.0.0.10", "flannel_public_ip": "203.0.113.7",
                                   "flannel_public_ipv6": "2001:db8::7"},
                        "--check", "--diff", "--tags", "flannel_configure")
    assert rc == 0, out
    words = [line[1:].strip().rstrip("\\").strip() for line in out.splitlines()
             if line.startswith("+  ") and ("--iface" in line or "--public-ip" in line)]
    assert words == ['"--iface=eth1"', '"--iface=192.168.82.11"',
                     r'"--iface-regex=^192\\.168\\.8[12]{1,2}\\. \"q\" $$HOME %%n"',
                     '"--iface-can-reach=10.0.0.10"', '"--public-ip=203.0.113.7"', '"--public-ipv6=2001:db8::7"'], out
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is missing (Debian: systemd); the words above were checked")
    unit = tmp_path / "ofli-check.service"
    unit.write_text("[Service]\nExecStart=/bin/true " + " ".join(words) + "\n")
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False)
    assert verify.returncode == 0 and "escape" not in verify.stderr, verify.stderr


def test_the_wireguard_backend_gets_wireguard_gos_socket_directory_in_the_unit(tmp_path: Path) -> None:
    """The hardened unit lets wireguard-go (the agent's child) make /run/wireguard; the PSK,
    a no_log option of flannel_backend, shows up nowhere."""
    psk = "oflwPSKoflwPSKoflwPSKoflwPSKoflwPSKoflwPSK0="
    rc, out = _role_run(tmp_path, {"flannel_etcd_endpoints": ["http://127.0.0.1:2379"],
                                   "flannel_backend": {"type": "wireguard", "psk": psk}},
                        "--check", "--diff", "--tags", "flannel_configure")
    assert rc == 0, out
    assert "+RuntimeDirectory=wireguard" in out, out
    assert psk not in out
