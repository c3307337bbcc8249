"""A host with two NICs picks the right one in each mode: the agent (bin/flannel-agent) and the
flannel_lease module, against a real etcd; the lease's PublicIP shows the choice.

    ofli-<pid>-ul   switch br0 192.168.81.2/24, etcd on http://192.168.81.2:2379
    ofli-<pid>-n2   a second network's switch (192.168.82.0/24)
    ofli-<pid>-h    the host: eth0 192.168.81.11/24 (default route), eth1 192.168.82.11/24

(a ``lab.rig.Rig``, the second NIC from ``Rig.add_network``/``Rig.nic``). Nothing is added to
the root namespace; namespaces, etcd and agents go afterwards (by PID), also on failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import netns
from lab.rig import Rig
from lab.wait import wait_for
from support.ansible_run import run_playbook

REPO = Path(__file__).resolve().parents[3]
AGENT = REPO / "bin" / "flannel-agent"
PLAYBOOK = Path(__file__).resolve().parents[1] / "modules" / "playbooks" / "underlay_choice.yml"
CONFIG = json.dumps({"Network": "10.5.0.0/16", "Backend": {"Type": "host-gw"}})
ETH0, ETH1 = "192.168.81.11", "192.168.82.11"

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("etcd"), reason="needs root and etcd"),
]


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with Rig(f"ofli-{os.getpid()}-") as rig:
        rig.build_switch(offset=2)
        rig.start_etcd([rig.address(2)], names=["lab"])
        host = rig.node("h", 11)
        netns.ip(host, "route", "add", "default", "dev", "eth0")
        rig.add_network("n2", "192.168.82.0/24")
        rig.nic(host, "eth1", "n2", 11)
        yield rig


def run_agent(rig: Rig, prefix: str, *flags: str) -> tuple[dict[str, object] | None, int | None, str]:
    """Start the agent with *flags*; the lease it wrote (None if it exited first), its exit code
    (None: it was running, and is killed) and its log."""
    rig.etcd.etcdctl("put", f"{prefix}/config", CONFIG)
    log_path = rig.tmp / f"agent{prefix.replace('/', '-')}.log"
    with open(log_path, "wb") as log:
        proc = rig.popen(rig.ns("h"), str(AGENT), "--etcd-endpoints", rig.etcd.endpoint, "--etcd-prefix", prefix,
                         "--subnet-file", str(rig.tmp / f"subnet{prefix.replace('/', '-')}.env"), *flags,
                         stdout=log, stderr=subprocess.STDOUT,
                         env=dict(os.environ, PATH=f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"))
    try:
        wait_for(lambda: proc.poll() is not None or rig.etcd.get_prefix(f"{prefix}/subnets/"), 20, "a lease or an exit")
        leases = list(rig.etcd.get_prefix(f"{prefix}/subnets/").values())
    finally:
        code = proc.poll()
        if code is None:
            proc.kill()  # by its PID
            proc.wait(5)
    return (json.loads(leases[0]) if leases else None), code, log_path.read_text(errors="replace")


@pytest.mark.parametrize(("flags", "iface", "public_ip"), [
    ((), "eth0", ETH0),
    (("--iface", "eth1"), "eth1", ETH1),
    (("--iface", "eth9", "--iface", ETH1), "eth1", ETH1),
    (("--iface-regex", r"^192\.168\.82\."), "eth1", ETH1),
    (("--iface-regex", "^wlan", "--iface-regex", "^eth1$"), "eth1", ETH1),
    (("--iface-can-reach", "192.168.82.200"), "eth1", ETH1),
    (("--iface", "eth1", "--public-ip", "203.0.113.7", "--public-ipv6", "2001:db8::7"), "eth1", "203.0.113.7"),
    (("--public-ip", ETH1), "eth1", ETH1),
], ids=["default-route", "name", "first-that-exists", "regex-address", "regex-name", "can-reach", "public-ip",
        "public-ip-alone"])
def test_the_agent_advertises_the_chosen_interface(rig, etcd_prefix, flags, iface, public_ip):
    lease, code, log = run_agent(rig, etcd_prefix, *flags)
    assert lease is not None and code is None, log
    assert lease["PublicIP"] == public_ip, lease
    assert lease["PublicIPv6"] == ("2001:db8::7" if "--public-ipv6" in flags else None), lease
    assert f"underlay {iface} (mtu 1500, address {ETH1 if iface == 'eth1' else ETH0})" in log, log


def test_the_agent_names_what_was_asked_and_what_the_host_has(rig, etcd_prefix):
    lease, code, log = run_agent(rig, etcd_prefix, "--iface", "eth9", "--iface-regex", "^10\\.")
    assert lease is None and code == 1, log
    for part in ("iface 'eth9': no such interface", "iface-regex '^10\\\\.': matches no interface name or IPv4",
                 f"eth0 ({ETH0})", f"eth1 ({ETH1})"):
        assert part in log, log
    assert "Traceback" not in log


def test_the_module_advertises_the_chosen_interface(rig, etcd_prefix):
    """One playbook on the host (ip netns exec): each mode under its own prefix, and a choice that
    matches nothing fails clearly."""
    for mode in ("list", "regex", "reach", "public", "nomatch"):
        rig.etcd.etcdctl("put", f"{etcd_prefix}/{mode}/config", CONFIG)
    run_playbook(PLAYBOOK, {"endpoint": rig.etcd.endpoint, "prefix": etcd_prefix, "workdir": str(rig.tmp)},
                 netns=rig.ns("h"))
    leases = {mode: json.loads(next(iter(rig.etcd.get_prefix(f"{etcd_prefix}/{mode}/subnets/").values())))
              for mode in ("list", "regex", "reach", "public")}
    assert {mode: lease["PublicIP"] for mode, lease in leases.items()} == {
        "list": ETH1, "regex": ETH1, "reach": ETH1, "public": "203.0.113.7"}
    assert leases["public"]["PublicIPv6"] == "2001:db8::7" and leases["list"]["PublicIPv6"] is None
    assert rig.etcd.get_prefix(f"{etcd_prefix}/nomatch/subnets/") == {}
