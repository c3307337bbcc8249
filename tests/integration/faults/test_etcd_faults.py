"""etcd faults on a converged light lab: 1 of 3 members down, no quorum, a host cut off from
etcd for longer than its lease TTL.

3 light hosts with the real agent (vxlan, lease TTL 10 s), a container on each, 3 etcd
members. Figures (lost pings at a 100 ms interval, recovery times) are printed (pytest -s).
``OFL_FAULTS_QUORUM_OUTAGE`` sets the no-quorum outage in seconds (default 20; the issue's
figure is for 60).
"""

from __future__ import annotations

import os
import re
import time

import pytest
from fault_lab import TTL, FaultLab, converged_lab

from lab.wait import wait_for

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

QUORUM_OUTAGE = float(os.environ.get("OFL_FAULTS_QUORUM_OUTAGE", "20"))
ETCD_TIMEOUT = 2  # flannel_etcd_timeout of the converges (FaultLab.site_yml)
# what a converge says without quorum: every endpoint and why, or the member that has no quorum
CLEAR_FAILURE = (rf"no etcd endpoint answered within {ETCD_TIMEOUT}s \(http://|"
                 r"etcd at http://\S+ failed: \w+: context deadline exceeded")
WATCH_PROBE_KEY = "10.5.250.0-24"
WATCH_PROBE_IP = "192.168.81.250"


@pytest.fixture(scope="module")
def fl(tmp_path_factory):
    with converged_lab(tmp_path_factory.mktemp("faults-etcd"), etcd_members=3) as ov:
        yield ov


def watching_and_renewing(fl: FaultLab, timeout: float = 10) -> float:
    """Seconds until every agent has programmed a lease written now (they watch), after
    checking every agent's lease outlived its TTL (they renew); the probe lease goes again."""
    leases = {host: fl.lease_of(host)[0] for host in fl.agents}
    fl.put_lease(WATCH_PROBE_KEY, WATCH_PROBE_IP)
    try:
        took = wait_for(lambda: all(fl.peer_state(h, WATCH_PROBE_KEY.replace("-", "/"), WATCH_PROBE_IP)["route"]
                                    for h in fl.agents), timeout, what="every agent programming a new lease",
                        interval=0.1)
    finally:
        fl.lab.etcdctl("del", fl.key_of(WATCH_PROBE_KEY))
    assert all(fl.has_key(key) for key in leases.values()), "a lease expired: an agent stopped renewing"
    return took


def test_one_member_down_agents_renew_and_watch_and_the_converge_changes_nothing(fl):
    lab = fl.lab
    stream = fl.start_ping_stream("c1", fl.containers["c3"], seconds=TTL * 2 + 25)
    time.sleep(1)
    lab.stop_etcd(1)  # the first endpoint of every agent and of the modules
    try:
        time.sleep(TTL * 1.5)  # longer than the TTL: only renewed leases are still there
        took = watching_and_renewing(fl)
        converge = fl.site_yml()
        print(f"\n[1 of 3 down] new lease programmed by every agent in {took:.2f} s; "
              f"site.yml in {converge.seconds:.1f} s, recap {converge.recap}")
        converge.assert_ok(changed=False)
    finally:
        lab.start_etcd(1)
    lost = fl.lost(stream, timeout=90)
    print(f"[1 of 3 down] lost pings: {lost}")
    assert lost == 0
    assert all(proc.poll() is None for proc in fl.agents.values()), "an agent died"


def test_no_quorum_loses_no_packet_fails_converges_quickly_and_recovers_alone(fl):
    lab = fl.lab
    streams = [fl.start_ping_stream(src, fl.containers[dst], seconds=max(QUORUM_OUTAGE, 35) + 15)
               for src, dst in (("c1", "c2"), ("c2", "c3"), ("c3", "c1"))]
    time.sleep(1)
    lab.stop_etcd(1)
    lab.stop_etcd(2)
    lost_quorum = time.monotonic()
    try:
        converge = fl.site_yml()
        print(f"\n[no quorum] site.yml failed in {converge.seconds:.1f} s")
        assert converge.proc.returncode != 0
        assert re.search(CLEAR_FAILURE, converge.proc.stdout), converge.output
        # The baseline is the same module failing at once (nothing listens on port 9): its start-up,
        # imports and netlink look-ups cost the same, and on a busy 2-core box they vary by a second,
        # so each is timed twice and the faster run counts (CI once saw 3.1 s from one slow start-up).
        lease_args = {"etcd_timeout": ETCD_TIMEOUT, "iface": "eth0", "subnet_file": ""}
        ping = fl.adhoc("h1", "ansible.builtin.ping")
        refused = min((fl.adhoc("h1", "overlaynet.flannel.flannel_lease",
                                {**lease_args, "etcd_endpoints": ["http://127.0.0.1:9"]}) for _attempt in range(2)),
                      key=lambda run: run.seconds)
        module = min((fl.adhoc("h1", "overlaynet.flannel.flannel_lease",
                               {**lease_args, "etcd_endpoints": lab.etcd_endpoints}) for _attempt in range(2)),
                     key=lambda run: run.seconds)
        extra = module.seconds - refused.seconds
        print(f"[no quorum] flannel_lease failed after {extra:.2f} s more than with a refused endpoint, which "
              f"took {refused.seconds - ping.seconds:.2f} s more than a ping module (etcd_timeout {ETCD_TIMEOUT} s)")
        assert refused.proc.returncode != 0 and refused.seconds - ping.seconds < ETCD_TIMEOUT, refused.output
        assert module.proc.returncode != 0 and re.search(CLEAR_FAILURE, module.proc.stdout), module.output
        assert extra < ETCD_TIMEOUT + 1.0
        time.sleep(max(0.0, QUORUM_OUTAGE - (time.monotonic() - lost_quorum)))
        assert all(proc.poll() is None for proc in fl.agents.values()), "an agent died without quorum"
    finally:
        lab.start_etcd(1, wait=False)
        lab.start_etcd(2, wait=False)
    back = time.monotonic()
    wait_for(lambda: lab._etcd().healthy()[0], 30, what="etcd quorum back", interval=0.1)
    healthy = time.monotonic() - back
    took = watching_and_renewing(fl, timeout=30)
    recovered = time.monotonic() - back
    losses = [fl.lost(stream, timeout=90) for stream in streams]
    converge = fl.site_yml()
    print(f"[no quorum {QUORUM_OUTAGE:g} s] lost pings {losses}; etcd healthy {healthy:.2f} s after the members "
          f"returned, agents watching again {recovered:.2f} s after ({took:.2f} s for a new lease); "
          f"site.yml then {converge.seconds:.1f} s, recap {converge.recap}")
    assert losses == [0, 0, 0]
    converge.assert_ok(changed=False)


def test_cut_off_longer_than_the_ttl_gets_the_subnet_back_when_free(fl):
    key, lease = fl.lease_of("h3")
    subnet, ip = key.replace("-", "/"), lease["PublicIP"]
    with fl.cut_off_from_etcd("h3"):
        wait_for(lambda: not fl.has_key(key), TTL * 3, what="h3's lease expiring", interval=0.2)
        expired = time.monotonic()
        fl.wait_peers_clean("h3", subnet, ip)
        time.sleep(2)
    returned = time.monotonic()
    took = wait_for(lambda: fl.has_key(key) and fl.leases()[key]["PublicIP"] == ip, 20,
                    what="h3 taking its subnet back", interval=0.2)
    fl.peers_follow("h3", subnet, ip)
    print(f"\n[cut off > TTL] out {returned - expired + TTL:.1f} s; subnet back {took:.2f} s after etcd returned")
    assert fl.agents["h3"].poll() is None, "the agent exited although its subnet was free"
    assert fl.flannel_subnet("h3").startswith(subnet.split("/")[0][:-1])
    wait_for(lambda: fl.ping("c1", fl.containers["c3"]), 10, interval=0.2, what="c1 -> c3 again")


def test_cut_off_longer_than_the_ttl_exits_when_taken_and_a_restart_takes_a_new_subnet(fl):
    key, lease = fl.lease_of("h3")
    ip = lease["PublicIP"]
    with fl.recording_lease_events() as events:
        with fl.cut_off_from_etcd("h3"):
            wait_for(lambda: not fl.has_key(key), TTL * 3, what="h3's lease expiring", interval=0.2)
            fl.put_lease(key, "192.168.81.201")  # another host takes the free subnet meanwhile
        try:
            rc = fl.agents["h3"].wait(30)
            fl.agents.pop("h3")
            log = (fl.logs / "agent-h3.log").read_text()
            assert rc != 0
            assert re.search(r"(now belongs to|was taken by) 192\.168\.81\.201", log), log[-2000:]
            fl.start_agent("h3")  # what systemd's Restart=always does
            by_ip = fl.leases_by_ip()
            assert by_ip.get("192.168.81.201") == [key], events.read_text()[-3000:]
            new_key = by_ip[ip][0]
            assert new_key != key
            assert fl.flannel_subnet("h3").rsplit(".", 1)[0] == new_key.rsplit(".", 1)[0]
            fl.peers_follow("h3", new_key.replace("-", "/"), ip)
        finally:
            fl.lab.etcdctl("del", fl.key_of(key))
