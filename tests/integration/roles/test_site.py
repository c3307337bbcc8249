"""site.yml on real machines: check mode on fresh machines, converge, converge again, pings.

Boots the machine lab (``lab.machine_lab``: 3 systemd-nspawn machines with docker, 3 etcd
members, namespace prefix ``oflr-`` so it never meets a developer's lab) and runs
``ansible-playbook -i <its inventory> site.yml`` as a user would:

1. ``--check`` on the fresh machines: nothing fails;
2. the first converge: nothing fails;
3. the second converge: ``changed=0`` on every host;
4. busybox containers on every pair of machines ping each other (``ping-matrix``);
5. the roles' parts that need facts of other parts, run alone by tag on the converged
   machines (``--tags flannel_lease,flannel_service,docker_bridge_configure``): ``changed=0``;
6. the etcd TLS files the role copied (the lab is secured: mutual TLS and etcd auth) are
   root's, the key 0600; a changed CA on one host is copied again and restarts its agent;
7. a backend switch udp -> vxlan under pings (the longest outage, the switch's time);
8. vxlan -> host-gw in a new Network (``flannel_network_config_force``), then ``changed=0``.

Wall times of each step are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.machine_lab import MachineLab, cannot_run
from lab.ping_watch import PingWatch
from lab.playbook import recap as parse_recap
from lab.playbook import run_playbook

REPO = Path(__file__).resolve().parents[3]
PREFIX = "oflr-"

pytestmark = [pytest.mark.lab, pytest.mark.slow]


@pytest.fixture(scope="module")
def machine_lab(tmp_path_factory):
    reason = cannot_run()
    if reason:
        pytest.skip(reason)
    # docker's data dir inside a machine must not sit on overlayfs/tmpfs: keep it in the repo
    state = REPO / "lab" / ".machines" / "pytest"
    inventory = state / "inventory.yml"
    env = dict(os.environ, OFL_MACHINE_LAB_STATE=str(state), OFL_MACHINE_LAB_INVENTORY=str(inventory),
               OFL_MACHINE_LAB_PREFIX=PREFIX)
    lab = [sys.executable, "-m", "lab.machine_lab"]
    subprocess.run([*lab, "down"], cwd=REPO, env=env, capture_output=True, check=False)  # leftovers of a killed run
    t0 = time.monotonic()
    up = subprocess.run([*lab, "up", "--machines", "3", "--etcd-members", "3"], cwd=REPO, env=env,
                        capture_output=True, text=True, check=False)
    assert up.returncode == 0, up.stdout + up.stderr
    print(f"\n[machine lab] up in {time.monotonic() - t0:.1f} s")
    try:
        yield {"inventory": inventory, "env": env, "lab": lab, "state": state}
    finally:
        down = subprocess.run([*lab, "down"], cwd=REPO, env=env, capture_output=True, text=True, check=False)
        assert down.returncode == 0, down.stdout + down.stderr
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
        assert PREFIX not in left, f"namespaces left behind: {left}"


def _playbook(lab, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """site.yml on the lab's machines (lab.playbook: this checkout as the collection)."""
    lab_vars = {k: v for k, v in lab["env"].items() if k.startswith("OFL_")}
    run = run_playbook(lab["inventory"], *args, env=lab_vars)
    return run.proc, run.seconds


def _converge_changes_nothing(machine_lab, label: str, *args: str) -> subprocess.CompletedProcess[str]:
    r, took = _playbook(machine_lab, *args)
    recap = parse_recap(r.stdout)
    print(f"{label}: {took:.1f} s, recap {recap}")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    changed = re.findall(r"^changed: \[.*$", r.stdout, re.M)
    assert all(h["changed"] == 0 for h in recap.values()), "\n".join(changed) + f"\n{recap}"
    return r


# What a converge on converged machines skips (its markers and the look in inspect.yml match).
SKIPPED_WHEN_CONVERGED = ("Install the agent's Python dependencies into the venv",
                          "Install the engine and the agent launcher", "Copy the etcd TLS files")


def _ran_on(output: str, task: str) -> list[str]:
    """Hosts a task ran on (ok/changed) in a run's output; [] when it was skipped everywhere."""
    section = re.search(rf"^TASK \[(?:[^\]]*: )?{re.escape(task)}[^\n]*\n(.*?)(?=^TASK |^RUNNING HANDLER |^PLAY )",
                        output, re.S | re.M)
    assert section, f"no task {task!r} in the output"
    return re.findall(r"^(?:ok|changed): \[([^\]]+)\]", section.group(1), re.M)


def test_site_yml_check_converge_idempotent_ping(machine_lab):
    # 1. check mode on fresh machines fails nothing
    r, t_check = _playbook(machine_lab, "--check")
    recap = parse_recap(r.stdout)
    print(f"[site.yml] check mode on fresh machines: {t_check:.1f} s")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert len(recap) == 3 and all(h["failed"] == 0 and h["unreachable"] == 0 for h in recap.values()), recap

    # 2. first converge
    r, t_first = _playbook(machine_lab)
    recap = parse_recap(r.stdout)
    print(f"[site.yml] first converge: {t_first:.1f} s")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert all(h["failed"] == 0 and h["changed"] > 0 for h in recap.values()), recap

    # 3. second converge changes nothing, and skips pip, the unpacking and the TLS copies
    r = _converge_changes_nothing(machine_lab, "[site.yml] second converge")
    for task in SKIPPED_WHEN_CONVERGED:
        assert _ran_on(r.stdout, task) == [], (task, r.stdout[-6000:])

    # 4. containers on different machines reach each other
    _assert_full_ping_matrix(machine_lab)

    # 5. parts run alone by tag (no install, no configure) find what they need and change nothing
    r, t_tags = _playbook(machine_lab, "--tags", "flannel_lease,flannel_service,docker_bridge_configure")
    recap = parse_recap(r.stdout)
    print(f"[site.yml] --tags flannel_lease,flannel_service,docker_bridge_configure: {t_tags:.1f} s, recap {recap}")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert "Acquire this host's subnet lease" in r.stdout and "Create the agent's venv" not in r.stdout
    assert len(recap) == 3 and all(h["failed"] == 0 and h["changed"] == 0 for h in recap.values()), recap

    # 6. the copied etcd TLS files: root's, key 0600; a changed one is replaced and restarts the agent
    m1 = MachineLab(machine_lab["state"], machine_lab["inventory"], PREFIX).machine(f"{PREFIX}m1")
    pki = "/etc/overlaynet-flannel/pki"
    modes = m1.run(["stat", "-c", "%n %a %U", f"{pki}/etcd-ca.pem", f"{pki}/etcd-client.pem",
                    f"{pki}/etcd-client.key"]).stdout.split("\n")
    assert modes[:3] == [f"{pki}/etcd-ca.pem 644 root", f"{pki}/etcd-client.pem 644 root",
                         f"{pki}/etcd-client.key 600 root"], modes
    unit = m1.run(["cat", "/etc/systemd/system/flanneld.service"]).stdout
    assert f"--etcd-cafile={pki}/etcd-ca.pem" in unit and "--etcd-username=flannel" in unit
    assert "PASSWORD" not in unit.upper()
    pid = m1.run(["systemctl", "show", "-p", "MainPID", "--value", "flanneld"]).stdout.strip()
    m1.run(["sh", "-c", f"echo >> {pki}/etcd-ca.pem"])
    r, t_cert = _playbook(machine_lab, "--tags", "flannel_configure,flannel_service", "--limit", f"{PREFIX}m1")
    recap = parse_recap(r.stdout)
    print(f"[site.yml] a changed CA on one host: {t_cert:.1f} s, recap {recap}")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert re.search(r"^changed: \[oflr-m1\] => \(item=/etc/overlaynet-flannel/pki/etcd-ca.pem\)", r.stdout, re.M), \
        r.stdout[-6000:]
    assert "RUNNING HANDLER [overlaynet.flannel.flannel : Restart the flannel agent]" in r.stdout
    after = m1.run(["systemctl", "show", "-p", "MainPID", "--value", "flanneld"]).stdout.strip()
    assert after not in ("0", pid), (pid, after)
    assert m1.run(["systemctl", "is-active", "flanneld"]).stdout.strip() == "active"


def _assert_full_ping_matrix(machine_lab) -> None:
    """The lab's ping matrix, as a user runs it: every pair of machines' containers reach each other."""
    p = subprocess.run([*machine_lab["lab"], "ping-matrix"], cwd=REPO, env=machine_lab["env"],
                       capture_output=True, text=True, timeout=300, check=False)
    print(p.stdout)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "✘" not in p.stdout, p.stdout


def _machines(machine_lab) -> list:
    lab = MachineLab(machine_lab["state"], machine_lab["inventory"], PREFIX)
    return [lab.machine(m["name"]) for m in lab.state["machines"]]


def _bridge_address(machine) -> str:
    """docker0's address (FLANNEL_SUBNET's first host): reached over the overlay from peers,
    and kept while docker restarts for a new MTU (the containers are restarted by it)."""
    env = machine.run(["cat", "/run/flannel/subnet.env"]).stdout
    return re.search(r"^FLANNEL_SUBNET=([\d.]+)/", env, re.M).group(1)


def test_a_backend_switch_udp_to_vxlan_converges_with_short_outages(machine_lab):
    """The classic set-up moved to vxlan (issue: live config change). From the converged
    cluster of the test above: site.yml with udp, then site.yml with the default (vxlan)
    while every machine pings the next one's docker0 every 100 ms; a third site.yml changes
    nothing and no agent fights the module over its lease."""
    machines = _machines(machine_lab)
    r, t_udp = _playbook(machine_lab, "-e", '{"flannel_backend": {"type": "udp"}}')
    print(f"[switch] site.yml vxlan -> udp: {t_udp:.1f} s")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    for m in machines:
        links = m.run(["ip", "-o", "link", "show"]).stdout
        assert "flannel0" in links and "flannel.1" not in links, (m.name, links)
        assert "FLANNEL_MTU=1472" in m.run(["cat", "/run/flannel/subnet.env"]).stdout

    since = machines[0].run(["date", "+%s"]).stdout.strip()
    targets = [_bridge_address(m) for m in machines]
    watches = [PingWatch(m, targets[(i + 1) % len(machines)]).start() for i, m in enumerate(machines)]
    time.sleep(2)
    r, t_switch = _playbook(machine_lab)
    time.sleep(3)
    losses = [w.stop() for w in watches]
    for loss in losses:
        print(f"[switch] udp -> vxlan: {loss}")
    print(f"[switch] site.yml udp -> vxlan: {t_switch:.1f} s")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert t_switch < 90  # the target is 60 s: measured 53.7-60.2 s (55.9 s last), more on a loaded box
    assert all(loss.received > 0 for loss in losses), losses
    # the target is 3 s: measured 2.4-2.6 s, 3.2-3.7 s on a loaded box: held at 5 s
    assert max(loss.longest_gap for loss in losses) <= 5.0, losses
    for m in machines:
        links = m.run(["ip", "-o", "link", "show"]).stdout
        assert "flannel.1" in links and "flannel0" not in links, (m.name, links)
        assert "FLANNEL_MTU=1450" in m.run(["cat", "/run/flannel/subnet.env"]).stdout

    _converge_changes_nothing(machine_lab, "[switch] the next site.yml")
    for m in machines:
        journal = m.run(["journalctl", "-u", "flanneld", "--since", f"@{since}", "-o", "cat"]).stdout
        assert journal.count("writing ours back") <= 1, (m.name, journal[-3000:])
    _assert_full_ping_matrix(machine_lab)


def test_vxlan_to_host_gw_in_a_new_network_with_force(machine_lab):
    """Back from vxlan to host-gw, the cluster moved to another Network in the same site.yml
    (flannel_network_config_force: the documented procedure). One converge, to keep the
    suite's time: each agent starts again on the new config, removes flannel.1, leases a
    subnet in the new network (its old lease goes), docker0 is re-addressed and docker's
    restart names the containers left stopped; the next site.yml changes nothing."""
    machines = _machines(machine_lab)
    moved = ("-e", json.dumps({"flannel_backend": {"type": "host-gw"}, "flannel_network": "10.6.0.0/16",
                               "flannel_network_config_force": True}))
    r, took = _playbook(machine_lab, *moved)
    print(f"[switch] site.yml vxlan -> host-gw in 10.6.0.0/16: {took:.1f} s")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert "3 lease(s) outside 10.6.0.0/16 are replaced" in r.stdout, r.stdout[-6000:]
    for m in machines:
        links = m.run(["ip", "-o", "link", "show"]).stdout
        assert "flannel.1" not in links and "flannel0" not in links, (m.name, links)
        env = m.run(["cat", "/run/flannel/subnet.env"]).stdout
        assert "FLANNEL_NETWORK=10.6.0.0/16" in env and "FLANNEL_MTU=1500" in env, (m.name, env)
        bridge = _bridge_address(m)
        assert bridge.startswith("10.6."), (m.name, env)
        assert f"inet {bridge}/24" in m.run(["ip", "-4", "-o", "addr", "show", "dev", "docker0"]).stdout
        assert re.search(rf"docker on {m.name} restarted for bridge {re.escape(bridge)}/24 .*: ping\b", r.stdout), \
            r.stdout[-6000:]
        forward = m.run(["iptables", "-w", "-S", "FORWARD"]).stdout  # the old network's accepts went
        assert "10.6.0.0/16" in forward and "10.5.0.0/16" not in forward, (m.name, forward)
    keys = MachineLab(machine_lab["state"], machine_lab["inventory"], PREFIX).etcdctl(
        ["get", "--prefix", "--keys-only", "/coreos.com/network/subnets/"]).stdout.split()
    assert len(keys) == 3 and all(k.rsplit("/", 1)[1].startswith("10.6.") for k in keys), keys

    _converge_changes_nothing(machine_lab, "[switch] the next site.yml", *moved)
    _assert_full_ping_matrix(machine_lab)
