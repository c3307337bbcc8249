"""Host faults on a converged light lab: a host that vanishes without releasing, a host whose
public IP changes, two converges at once, a reserved subnet.

3 light hosts with the real agent (vxlan, lease TTL 10 s), a container on each, one etcd
member. Figures are printed (pytest -s).
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from fault_lab import TTL, FaultLab, converged_lab

from lab.wait import wait_for

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

MOVED_IP = "192.168.81.113"


@pytest.fixture(scope="module")
def fl(tmp_path_factory):
    with converged_lab(tmp_path_factory.mktemp("faults-host"), etcd_members=1) as ov:
        yield ov


def wipe_as_a_reboot_would(fl: FaultLab, host: str) -> None:
    """What a reboot takes from a host: /run (the subnet file) and the overlay device."""
    fl.subnet_env(host).unlink()
    fl.lab.run(host, ["ip", "link", "del", "flannel.1"], check=False)


def test_a_vanished_host_leaves_every_peer_within_5s_of_its_lease_expiring(fl):
    key, lease = fl.lease_of("h2")
    subnet, ip = key.replace("-", "/"), lease["PublicIP"]
    assert all(all(fl.peer_state(p, subnet, ip).values()) for p in ("h1", "h3"))
    fl.kill_agent("h2", signal.SIGKILL)  # no release: the lease stays until its TTL runs out
    killed = time.monotonic()
    wait_for(lambda: not fl.has_key(key), TTL * 2, what="h2's lease expiring", interval=0.05)
    expired = time.monotonic()
    took = fl.wait_peers_clean("h2", subnet, ip)
    print(f"\n[vanished host] lease expired {expired - killed:.1f} s after the kill (TTL {TTL} s); "
          f"peers clean {took:.2f} s after the expiry")
    fl.start_agent("h2")  # back: the subnet is free, so it is h2's again (its subnet file)
    assert fl.lease_of("h2")[0] == key
    fl.peers_follow("h2", subnet, ip)
    wait_for(lambda: fl.ping("c1", fl.containers["c2"]), 10, interval=0.2, what="c1 -> c2 again")


def move_address(fl: FaultLab, host: str, old: str, new: str) -> None:
    """Renumber eth0 (deleting the primary address first: it takes secondaries with it)."""
    default = fl.ip(host, "-4", "route", "show", "default").split()
    fl.lab.run(host, ["ip", "addr", "del", f"{old}/24", "dev", "eth0"], netns_only=True)
    fl.lab.run(host, ["ip", "addr", "add", f"{new}/24", "dev", "eth0"], netns_only=True)
    if default:
        fl.lab.run(host, ["ip", "route", "replace", *default], netns_only=True)


def test_a_changed_public_ip_keeps_the_subnet_drops_the_old_lease_and_peers_follow(fl):
    key, lease = fl.lease_of("h3")
    subnet, old_ip = key.replace("-", "/"), lease["PublicIP"]
    # h3's agent on a long TTL first: the converge keeps the key's etcd lease, which on the
    # lab's 10 s TTL, with no agent renewing it, can expire before the check on a loaded machine
    fl.kill_agent("h3", signal.SIGTERM)
    fl.start_agent("h3", "--subnet-lease-ttl=3600")
    wait_for(lambda: fl.granted_ttl(key) == 3600, 10, what="h3's lease on a 1 h TTL", interval=0.2)
    fl.kill_agent("h3", signal.SIGTERM)
    move_address(fl, "h3", old_ip, MOVED_IP)
    try:
        # the converge first (the agent not running yet), then the agent
        fl.site_yml("--limit", "h3", flannel_public_ip=MOVED_IP).assert_ok()
        assert fl.leases_by_ip().get(MOVED_IP) == [key] and old_ip not in fl.leases_by_ip()
        fl.start_agent("h3")
        took = fl.peers_follow("h3", subnet, MOVED_IP)
        stale = wait_for(lambda: not any(fl.peer_state(p, subnet, old_ip)["fdb"] for p in ("h1", "h2")), 5,
                         what="peers dropping the FDB entry towards the old address", interval=0.1)
        wait_for(lambda: fl.ping("c1", fl.containers["c3"]), 10, interval=0.2, what="c1 -> c3 at the new IP")
        print(f"\n[public IP change, site.yml] peers follow {took:.2f} s after the agent started, "
              f"old entries gone {stale:.2f} s later")
    finally:
        # and back, by a restarted agent alone
        fl.kill_agent("h3", signal.SIGTERM)
        move_address(fl, "h3", MOVED_IP, old_ip)
        fl.start_agent("h3")
    assert fl.leases_by_ip().get(old_ip) == [key] and MOVED_IP not in fl.leases_by_ip()
    took = fl.peers_follow("h3", subnet, old_ip)
    wait_for(lambda: fl.ping("c1", fl.containers["c3"]), 10, interval=0.2, what="c1 -> c3 at the old IP")
    print(f"[public IP change, agent alone] peers follow {took:.2f} s after the agent started")


def test_two_converges_at_once_give_every_host_one_lease(fl):
    lab = fl.lab
    new = [lab.add_host(), lab.add_host()]  # no lease yet: both converges create theirs at once
    try:
        runs = [fl.site_yml_started() for _run in range(2)]
        outputs = [run.communicate(timeout=300) for run in runs]
        for run, (out, err) in zip(runs, outputs, strict=True):
            assert run.returncode == 0, out[-6000:] + err[-2000:]
        by_ip = fl.leases_by_ip()
        for host in lab.hosts:
            assert len(by_ip.get(lab.host_address(host), [])) == 1, (host, by_ip)
        for host in new:
            key = by_ip[lab.host_address(host)][0]
            assert fl.flannel_subnet(host).rsplit(".", 1)[0] == key.rsplit(".", 1)[0]
        assert len(fl.leases()) == len(lab.hosts)  # no duplicate, none lost
        fl.site_yml().assert_ok(changed=False)
    finally:
        for host in new:
            for key in fl.leases_by_ip().get(lab.host_address(host), []):
                lab.etcdctl("del", fl.key_of(key))
            lab.remove_host(host)


def lease_module(fl: FaultLab, host: str, **args: object):
    return fl.adhoc(host, "overlaynet.flannel.flannel_lease",
                    {"etcd_endpoints": fl.lab.etcd_endpoints, "iface": "eth0", **args})


def test_a_reservation_survives_restarts_stays_without_ttl_and_goes_to_nobody_else(fl):
    lab = fl.lab
    key, _unused = fl.lease_of("h1")
    subnet = key.replace("-", "/")
    reserved = lease_module(fl, "h1", reservation=True)
    assert reserved.proc.returncode == 0, reserved.output
    assert fl.etcd_lease_id(key) == 0
    time.sleep(TTL * 1.5)  # the running agent neither re-attaches a TTL nor loses the key
    assert fl.etcd_lease_id(key) == 0 and fl.agents["h1"].poll() is None
    fl.kill_agent("h1", signal.SIGTERM)
    fl.start_agent("h1")  # an agent restart
    assert fl.lease_of("h1")[0] == key and fl.etcd_lease_id(key) == 0
    fl.kill_agent("h1", signal.SIGKILL)  # a host restart: no release, /run and devices gone
    wipe_as_a_reboot_would(fl, "h1")
    time.sleep(TTL * 1.5)
    assert fl.has_key(key) and fl.etcd_lease_id(key) == 0
    fl.start_agent("h1")
    assert fl.lease_of("h1")[0] == key and fl.etcd_lease_id(key) == 0
    fl.peers_follow("h1", subnet, lab.host_address("h1"))
    fl.site_yml("--limit", "h1").assert_ok(changed=False)  # reservation: false in the role; it stays one
    assert fl.etcd_lease_id(key) == 0
    # another host: asked for it, refused; hinted at it (its subnet file), given another one
    other = lab.add_host()
    try:
        asked = lease_module(fl, other, subnet=subnet, subnet_file="")
        assert asked.proc.returncode != 0 and f"held by {lab.host_address('h1')}" in asked.proc.stdout, asked.output
        env = fl.subnet_env(other)
        env.parent.mkdir(parents=True, exist_ok=True)
        env.write_text(f"FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET={subnet.replace('.0/', '.1/')}\n"
                       "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")
        fl.start_agent(other)
        wait_for(lambda: lab.host_address(other) in fl.leases_by_ip(), 20, what=f"a lease for {other}", interval=0.2)
        assert fl.lease_of(other)[0] != key and fl.lease_of("h1")[0] == key
    finally:
        fl.kill_agent(other, signal.SIGTERM)
        lab.etcdctl("del", fl.key_of(fl.lease_of(other)[0]))
        lab.remove_host(other)
