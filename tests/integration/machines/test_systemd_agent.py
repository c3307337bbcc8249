"""The agent under real systemd on lab machines: hardened unit, lossless kill -9, bad flags.

One machine lab (2 nspawn machines with systemd and docker, 1 etcd member, prefix ``oflu-`` or
$OFL_SYSTEMD_AGENT_PREFIX) for the module. For each backend (udp first: its restarts are the hard case; ``site.yml``
converges the machines with it, the next ones are written to etcd and the agents follow),
while a busybox container on one machine pings one on the other every 100 ms, the agent's
main PID on the first is killed with SIGKILL; systemd restarts it (``Restart=always``) and
at most one ping may be lost. For udp the restarted agent must have taken flannel0's queue
and its socket from systemd's fd store (its journal says so), and nothing but the agent may
live in the unit's cgroup (no keeper under systemd).

Figures (exposure, restart times, lost pings) are printed: ``pytest -s``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.machine_lab import cannot_run
from lab.ping_watch import sent_and_received
from lab.playbook import recap as parse_recap

REPO = Path(__file__).resolve().parents[3]
COLLECTIONS = REPO / "build" / "collections"
PREFIX = os.environ.get("OFL_SYSTEMD_AGENT_PREFIX", "oflu-")  # a helper sharing the box runs its own
UNIT = "flanneld.service"
MAX_EXPOSURE = 4.0

pytestmark = [pytest.mark.lab, pytest.mark.slow]


class Lab:
    def __init__(self, env: dict[str, str], inventory: Path) -> None:
        self.env, self.inventory = env, inventory
        self.cli = [sys.executable, "-m", "lab.machine_lab"]
        self.backend: str | None = None  # what the last site.yml converged to

    def lab(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.cli, *args], cwd=REPO, env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def run(self, machine: str, cmd: str, check: bool = True, timeout: float = 60) -> str:
        from lab.machines import Machine

        box = Machine.load(Path(self.env["OFL_MACHINE_LAB_STATE"]) / "machines", machine)
        return box.run(cmd, check=check, timeout=timeout).stdout

    def playbook(self, *args: str) -> str:
        """site.yml with args; its output (the run must succeed)."""
        bindir = Path(sys.executable).parent
        env = dict(self.env, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_HOST_KEY_CHECKING="False",
                   ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1", PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")
        r = subprocess.run([str(bindir / "ansible-playbook"), "-i", str(self.inventory), "site.yml", *args],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
        return r.stdout

    def site(self, backend: str) -> None:
        t0 = time.monotonic()
        self.playbook("-e", json.dumps({"flannel_backend": {"type": backend}}))
        print(f"[site.yml] backend {backend}: {time.monotonic() - t0:.1f} s")
        self.backend = backend

    def show(self, machine: str, *props: str) -> dict[str, str]:
        out = self.run(machine, "systemctl show " + UNIT + "".join(f" -p {p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    reason = cannot_run("nsenter")
    if reason:
        pytest.skip(reason)
    state = REPO / "lab" / ".machines" / "systemd-agent"  # docker's data dir must not sit on overlayfs/tmpfs
    inventory = state / "inventory.yml"
    env = dict(os.environ, OFL_MACHINE_LAB_STATE=str(state), OFL_MACHINE_LAB_INVENTORY=str(inventory),
               OFL_MACHINE_LAB_PREFIX=PREFIX)
    machines = Lab(env, inventory)
    machines.lab("down")  # leftovers of a killed run
    up = machines.lab("up", "--machines", "2", "--etcd-members", "1")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield machines
    finally:
        down = machines.lab("down")
        assert down.returncode == 0, down.stdout + down.stderr
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
        assert f"{PREFIX}m" not in left, f"namespaces left behind: {left}"


M1, M2 = f"{PREFIX}m1", f"{PREFIX}m2"


MTU = {"udp": "1472", "vxlan": "1450", "host-gw": "1500"}


def follow(lab: Lab, backend: str) -> None:
    """The backend switched in etcd alone, no Ansible: each agent ends (exit 4) and systemd
    starts it again on the new config (a converge per backend would cost minutes)."""
    config = json.dumps({"Network": "10.5.0.0/16", "Backend": {"Type": backend}})
    put = lab.lab("etcdctl", "put", "/coreos.com/network/config", config)
    assert put.returncode == 0, put.stdout + put.stderr
    deadline = time.monotonic() + 60
    for machine in (M1, M2):
        while f"FLANNEL_MTU={MTU[backend]}" not in lab.run(machine, "cat /run/flannel/subnet.env") \
                or lab.show(machine, "ActiveState")["ActiveState"] != "active":
            assert time.monotonic() < deadline, lab.run(machine, f"journalctl -u {UNIT} -n 30 --no-pager")
            time.sleep(0.5)
    lab.backend = backend


def converge(lab: Lab, backend: str) -> str:
    """The machines on backend: site.yml the first time, then the config in etcd (follow());
    agents restarted so that each test's kill -9 meets an agent that started under systemd.
    The container on M1's address."""
    if lab.backend is None:
        lab.site(backend)
    elif lab.backend != backend:
        follow(lab, backend)
    for machine in (M1, M2):
        lab.run(machine, f"systemctl restart {UNIT}", timeout=120)  # Type=notify: returns once ready
    matrix = lab.lab("ping-matrix")
    assert matrix.returncode == 0 and "✘" not in matrix.stdout, matrix.stdout + matrix.stderr
    return lab.run(M1, "docker inspect -f '{{.NetworkSettings.IPAddress}}' ping").strip()


def kill_9_during_pings(lab: Lab, target: str, count: int = 80) -> dict[str, Any]:
    """Ping M1's container from M2's every 100 ms; SIGKILL M1's agent 2 s in. Lost pings, restart."""
    before = lab.show(M1, "MainPID", "NRestarts")
    since = lab.run(M1, "date +%s").strip()
    pinger = subprocess.Popen(
        ["nsenter", f"--target={_leader(lab, M2)}", "--all", "--", "docker", "exec", "ping",
         "ping", "-i", "0.1", "-c", str(count), target],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(2)
    t0 = time.monotonic()
    lab.run(M1, f"kill -9 {before['MainPID']}")
    while True:  # Type=notify: active again once the restarted agent said READY=1
        now = lab.show(M1, "ActiveState", "NRestarts")
        if now["NRestarts"] != before["NRestarts"] and now["ActiveState"] == "active":
            break
        assert time.monotonic() - t0 < 30, f"the agent was not restarted within 30 s: {now}"
        time.sleep(0.1)
    back = time.monotonic() - t0
    out, _err = pinger.communicate(timeout=count * 0.1 + 30)
    counts = sent_and_received(out)
    assert counts, out
    after = lab.show(M1, "MainPID", "ControlGroup")
    assert after["MainPID"] != before["MainPID"]
    return {"sent": counts[0], "lost": counts[0] - counts[1], "back_after": back,
            "since": since, "main_pid": after["MainPID"], "cgroup": after["ControlGroup"]}


def _leader(lab: Lab, machine: str) -> int:
    from lab.machines import Machine

    return Machine.load(Path(lab.env["OFL_MACHINE_LAB_STATE"]) / "machines", machine).leader_pid


def test_the_hardened_unit_rates_4_or_less_and_bad_flags_are_not_restarted(lab: Lab) -> None:
    lab.site("udp")
    out = lab.run(M1, f"systemd-analyze security {UNIT}", check=False)
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", out)
    assert m, out
    print(f"[systemd-analyze security {UNIT}] exposure {m.group(1)}")
    assert float(m.group(1)) <= MAX_EXPOSURE, out
    shown = lab.show(M1, "NoNewPrivileges", "CapabilityBoundingSet", "ProtectSystem", "FileDescriptorStoreMax",
                     "WatchdogUSec", "ActiveState")
    assert shown["NoNewPrivileges"] == "yes" and shown["ProtectSystem"] == "strict"
    assert shown["CapabilityBoundingSet"].split() == ["cap_net_admin", "cap_net_raw"]
    assert shown["FileDescriptorStoreMax"] == "4" and shown["WatchdogUSec"] == "1min"
    assert shown["ActiveState"] == "active"  # iptables, TUN and netlink all work inside the sandbox
    assert lab.run(M1, "iptables -S FLANNEL-FWD").count("-j ACCEPT") == 2

    # A bad flag (exit 2) fails the unit once; Restart=always does not spin on it.
    dropin = f"/run/systemd/system/{UNIT}.d"
    lab.run(M2, f"mkdir -p {dropin} && printf '[Service]\\nEnvironment=FLANNELD_RECONCILE_INTERVAL=soon\\n' "
                f"> {dropin}/bad.conf && systemctl daemon-reload")
    try:
        lab.run(M2, f"systemctl restart {UNIT}", check=False)
        time.sleep(3)  # three times RestartSec
        shown = lab.show(M2, "ActiveState", "ExecMainStatus", "NRestarts")
        assert shown == {"ActiveState": "failed", "ExecMainStatus": "2", "NRestarts": "0"}, shown
    finally:
        lab.run(M2, f"rm -rf {dropin} && systemctl daemon-reload && systemctl restart {UNIT}")


@pytest.mark.parametrize("backend", ["udp", "vxlan", "host-gw"])
def test_kill_9_under_systemd_loses_at_most_one_ping(lab: Lab, backend: str) -> None:
    target = converge(lab, backend)
    got = kill_9_during_pings(lab, target)
    print(f"[kill -9 under systemd] {backend}: {got['lost']} of {got['sent']} pings lost, "
          f"agent back after {got['back_after']:.1f} s")
    assert got["lost"] <= 1, got
    journal = lab.run(M1, f"journalctl -u {UNIT} --since @{got['since']} --no-pager -o cat")
    if backend == "udp":
        assert "took over flannel0 and UDP 192.168.81.11:8285 from systemd's fd store" in journal, journal
        procs = lab.run(M1, f"cat /sys/fs/cgroup{got['cgroup']}/cgroup.procs").split()
        assert procs == [got["main_pid"]], f"more than the agent in the unit: {procs}"
    else:
        assert "took over flannel0" not in journal


def test_start_up_waits_for_etcd_longer_than_timeout_start_sec(lab: Lab) -> None:
    """EXTEND_TIMEOUT_USEC keeps a start-up that waits for etcd alive; READY=1 only after it."""
    dropin = f"/run/systemd/system/{UNIT}.d"
    block = "OUTPUT -p tcp --dport 2379 -j REJECT"  # in M1's own network namespace
    lab.run(M1, f"mkdir -p {dropin} && printf '[Service]\\nTimeoutStartSec=6\\n' > {dropin}/short.conf "
                f"&& systemctl daemon-reload && iptables -I {block}")
    try:
        lab.run(M1, f"systemctl restart --no-block {UNIT}")
        time.sleep(12)  # twice TimeoutStartSec
        shown = lab.show(M1, "ActiveState", "NRestarts", "StatusText")
        assert shown["ActiveState"] == "activating" and shown["NRestarts"] == "0", shown
        assert shown["StatusText"].startswith("waiting: could not"), shown
        lab.run(M1, f"iptables -D {block}")
        t0 = time.monotonic()
        while lab.show(M1, "ActiveState")["ActiveState"] != "active":
            assert time.monotonic() - t0 < 20, lab.show(M1, "ActiveState", "StatusText")
            time.sleep(0.2)
        print(f"[start-up] active {time.monotonic() - t0:.1f} s after etcd came back")
    finally:
        lab.run(M1, f"iptables -D {block}", check=False)
        lab.run(M1, f"rm -rf {dropin} && systemctl daemon-reload")


DOCKER_CE_DOCKERD = "/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock"


def _recap_changed(output: str, host: str) -> int:
    hosts = parse_recap(output)
    assert host in hosts, output[-3000:]
    return hosts[host]["changed"]


def test_the_dropin_starts_docker_ce_s_dockerd_with_docker_opts(lab: Lab) -> None:
    """docker-ce's unit runs /usr/bin/dockerd and has no $DOCKER_OPTS: the role's drop-in takes the
    vendor unit's own command and appends $DOCKER_OPTS. M2's docker is made docker-ce-shaped (a unit
    in /etc that overrides Debian's, /usr/bin/dockerd a symlink) and put back after; last in the
    module, so the tests above never meet it."""
    if lab.backend is None:  # run alone: the machines need the agent and the role's venv
        lab.site("udp")
    unit, json_file = "/etc/systemd/system/docker.service", "/etc/docker/daemon.json"
    dropin = "/etc/systemd/system/docker.service.d/10-overlaynet-flannel.conf"
    # dockerd refuses bip both as a flag and in daemon.json: the drop-in way starts without it.
    # No container is needed from here on: removed first, docker's restarts need not stop it (10 s each).
    lab.run(M2, "docker rm -f ping", check=False)
    lab.run(M2, f"ln -s /usr/sbin/dockerd /usr/bin/dockerd && mv {json_file} {json_file}.daemon-way "
                f"&& sed -e 's|^ExecStart=.*|ExecStart={DOCKER_CE_DOCKERD}|' -e '/^EnvironmentFile=/d' "
                f"/usr/lib/systemd/system/docker.service > {unit} && systemctl daemon-reload")
    try:
        assert lab.run(M2, "systemctl show -p FragmentPath --value docker").strip() == unit
        args = ("--tags", "docker_bridge", "--limit", M2, "-e", json.dumps({"docker_bridge_systemd_dropin": True}))
        t0 = time.monotonic()
        first = lab.playbook(*args)
        print(f"[docker-ce drop-in] first run {time.monotonic() - t0:.1f} s")
        assert _recap_changed(first, M2) > 0, first[-3000:]
        assert f"ExecStart={DOCKER_CE_DOCKERD} $DOCKER_OPTS" in lab.run(M2, f"cat {dropin}")
        pid = lab.run(M2, "systemctl show -p MainPID --value docker").strip()
        cmdline = lab.run(M2, f"tr '\\0' ' ' < /proc/{pid}/cmdline").split()
        subnet = re.search(r"^FLANNEL_SUBNET=(\S+)$", lab.run(M2, "cat /run/flannel/subnet.env"), re.MULTILINE)
        assert subnet, "no FLANNEL_SUBNET on M2"
        assert " ".join(cmdline[:4]) == DOCKER_CE_DOCKERD and f"--bip={subnet.group(1)}" in cmdline, cmdline
        assert f" {subnet.group(1)} " in lab.run(M2, "ip -4 -o addr show dev docker0")
        assert _recap_changed(lab.playbook(*args), M2) == 0
    finally:
        lab.run(M2, f"rm -f {unit} {dropin} /usr/bin/dockerd /run/docker_opts.env "
                    f"&& mv {json_file}.daemon-way {json_file}; systemctl daemon-reload && systemctl restart docker",
                check=False, timeout=120)
    assert lab.run(M2, "systemctl is-active docker", check=False).strip() == "active"
