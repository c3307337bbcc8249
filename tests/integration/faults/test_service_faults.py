"""Faults that need systemd (``Restart=always``) and docker: the machine lab, 2 machines.

- a crash loop from a bad network config (an unknown backend): once the config is fixed the
  agent comes back under ``Restart=always`` with no manual step;
- a machine cut off from etcd for longer than its lease TTL (10 s here) while another host
  takes its subnet: the agent exits naming the holder, systemd restarts it, it takes a new
  subnet, and the next converge moves docker0 there (docker_bridge).

Namespace prefix ``oflf-``; the machines' state lives under ``lab/.machines/faults``
(docker's data dir must not sit on overlayfs/tmpfs). Figures are printed (pytest -s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.machine_lab import MachineLab, cannot_run
from lab.wait import wait_for
from support.ansible_run import ansible_env

REPO = Path(__file__).resolve().parents[3]
PREFIX = "oflf-"
PREFIX_KEY = "/coreos.com/network"
TTL = 10
AGENT_ARGS = [f"--subnet-lease-ttl={TTL}", "--subnet-lease-renew-margin=1"]
STRANGER = "192.168.81.201"

pytestmark = [pytest.mark.lab, pytest.mark.slow]


class Machines:
    def __init__(self, state: Path) -> None:
        self.inventory = state / "inventory.yml"
        self.env = dict(os.environ, OFL_MACHINE_LAB_STATE=str(state), OFL_MACHINE_LAB_INVENTORY=str(self.inventory),
                        OFL_MACHINE_LAB_PREFIX=PREFIX)
        self.cli = [sys.executable, "-m", "lab.machine_lab"]
        self.state = state

    @property
    def lab(self) -> MachineLab:
        return MachineLab(self.state, self.inventory, PREFIX)

    def lab_cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.cli, *args], cwd=REPO, env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def converge(self) -> subprocess.CompletedProcess[str]:
        env = dict(ansible_env(), **{k: v for k, v in self.env.items() if k.startswith("OFL_")})
        extra = json.dumps({"flannel_extra_args": AGENT_ARGS})
        return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(self.inventory),
                               "site.yml", "-e", extra], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=900, check=False)

    def name(self, i: int) -> str:
        return self.lab.machine_name(i)

    def sh(self, i: int, cmd: str, check: bool = True) -> str:
        return self.lab.machine(self.name(i)).run(cmd, check=check).stdout

    def netns(self, i: int) -> str:
        return next(m["ns"] for m in self.lab.state["machines"] if m["name"] == self.name(i))

    def address(self, i: int) -> str:
        return next(m["address"] for m in self.lab.state["machines"] if m["name"] == self.name(i))

    def etcdctl(self, *args: str) -> str:
        return self.lab.etcdctl(list(args)).stdout

    def lease_key_of(self, i: int) -> str | None:
        out = self.etcdctl("get", "--prefix", f"{PREFIX_KEY}/subnets/")
        lines = out.splitlines()
        for k, v in zip(lines[::2], lines[1::2], strict=False):
            if json.loads(v)["PublicIP"] == self.address(i):
                return k.rsplit("/", 1)[1]
        return None

    def restarts(self, i: int) -> int:
        return int(self.sh(i, "systemctl show -p NRestarts --value flanneld").strip() or 0)

    def active(self, i: int) -> bool:
        return self.sh(i, "systemctl is-active flanneld", check=False).strip() == "active"

    def ping_matrix(self) -> subprocess.CompletedProcess[str]:
        return self.lab_cli("ping-matrix")


@pytest.fixture(scope="module")
def machines():
    reason = cannot_run("iptables")
    if reason:
        pytest.skip(reason)
    ms = Machines(REPO / "lab" / ".machines" / "faults")
    ms.lab_cli("down")  # leftovers of a killed run
    up = ms.lab_cli("up", "--machines", "2", "--etcd-members", "1", timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        first = ms.converge()
        assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-2000:]
        yield ms
    finally:
        down = ms.lab_cli("down")
        assert down.returncode == 0, down.stdout + down.stderr


def test_a_bad_config_holds_the_agent_back_until_it_is_fixed_with_no_manual_step(machines):
    """An unknown backend in etcd: the running agent does not follow it (config_guard); a
    restarted one does not crash-loop either, it waits in start-up (activating, saying why,
    its start deadline extended) and comes up by itself once the config is fixed."""
    config_key = f"{PREFIX_KEY}/config"
    good = machines.etcdctl("get", config_key, "--print-value-only").strip()
    before = machines.restarts(1)
    machines.etcdctl("put", config_key, json.dumps({"Network": "10.5.0.0/16", "Backend": {"Type": "nosuch"}}))
    try:
        wait_for(lambda: "ignoring the network config" in machines.sh(1, "journalctl -u flanneld -n 60 --no-pager"),
                 30, what="the running agent ignoring the bad config", interval=0.5)
        assert machines.active(1)
        machines.sh(1, "systemctl restart --no-block flanneld")
        wait_for(lambda: "could not read the network config" in machines.sh(
            1, "journalctl -u flanneld -n 60 --no-pager"), 60, what="the restarted agent waiting", interval=0.5)
        journal = machines.sh(1, "journalctl -u flanneld -n 60 --no-pager")
        assert "nosuch" in journal, journal[-3000:]
        time.sleep(3)
        assert not machines.active(1)  # no READY=1 on a config it cannot run
    finally:
        machines.etcdctl("put", config_key, good)
    fixed = time.monotonic()
    wait_for(lambda: machines.active(1), 60, what="the agent active again", interval=0.5)
    took = time.monotonic() - fixed
    time.sleep(3)
    assert machines.active(1)
    print(f"\n[bad config] {machines.restarts(1) - before} automatic restarts; "
          f"active {took:.1f} s after the config was fixed")
    p = machines.ping_matrix()
    assert p.returncode == 0 and "✘" not in p.stdout, p.stdout + p.stderr


def test_cut_off_past_the_ttl_with_the_subnet_taken_moves_to_a_new_one_and_docker0_follows(machines):
    old = machines.lease_key_of(2)
    assert old is not None
    before = machines.restarts(2)
    rule = ["OUTPUT", "-p", "tcp", "--dport", "2379", "-j", "DROP"]
    ns = machines.netns(2)
    subprocess.run(["ip", "netns", "exec", ns, "iptables", "-w", "-I", *rule], check=True)
    try:
        wait_for(lambda: not machines.etcdctl("get", f"{PREFIX_KEY}/subnets/{old}", "--keys-only").strip(),
                 TTL * 3, what="the machine's lease expiring", interval=0.5)
        value = {"PublicIP": STRANGER, "PublicIPv6": None, "BackendType": "vxlan",
                 "BackendData": {"VNI": 1, "VtepMAC": "0e:00:00:00:0f:02"}}
        machines.etcdctl("put", f"{PREFIX_KEY}/subnets/{old}", json.dumps(value, separators=(",", ":")))
    finally:
        subprocess.run(["ip", "netns", "exec", ns, "iptables", "-w", "-D", *rule], check=False)
    back = time.monotonic()
    try:
        wait_for(lambda: machines.lease_key_of(2) not in (None, old), 60, what="a new subnet", interval=0.5)
        took = time.monotonic() - back
        new = machines.lease_key_of(2)
        assert machines.restarts(2) > before
        journal = machines.sh(2, "journalctl -u flanneld -n 200 --no-pager")
        assert STRANGER in journal, journal[-3000:]
        assert new.rsplit(".", 1)[0] + "." in machines.sh(2, "cat /run/flannel/subnet.env")
        converge = machines.converge()  # docker_bridge moves docker0 to the new subnet
        assert converge.returncode == 0, converge.stdout[-6000:] + converge.stderr[-2000:]
        docker0 = machines.sh(2, "ip -4 -br addr show docker0")
        assert new.rsplit(".", 1)[0] + "." in docker0, docker0
        print(f"\n[cut off > TTL, taken] new subnet {new} {took:.1f} s after etcd came back; "
              f"docker0 {docker0.split()[-1]} after the converge")
    finally:
        machines.etcdctl("del", f"{PREFIX_KEY}/subnets/{old}")
    p = machines.ping_matrix()
    assert p.returncode == 0 and "✘" not in p.stdout, p.stdout + p.stderr
