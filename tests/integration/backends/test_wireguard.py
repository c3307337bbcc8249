"""The wireguard backend on real netlink and a real wireguard-go (these machines' kernel has
no wireguard module): three namespace "hosts" on one underlay bridge, a container each.

One rig for the module (prefix oflw-). The UAPI socket is named after the device and
/var/run is shared by the namespaces, so hosts 2 and 3 name their devices apart; host 1's
is flannel-wg, as on a real host, for the backend-switch test.
"""

from __future__ import annotations

import os
import signal

import netaddr
import pytest
from backend_lab import config, host_lease, local_host

from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.leftovers import remove_leftovers
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.wireguard.backend import WireguardBackend
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.wireguard.userspace import WireguardGo
from ansible_collections.overlaynet.flannel.plugins.module_utils.host import netlink as nl
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.lease import Lease, LeaseAttrs
from lab.rig import Rig
from lab.wait import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]

WG = {"Type": "wireguard", "PersistentKeepaliveInterval": 25}


class WgRig:
    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.hosts = rig.docker_hosts(3)
        self.config = config(WG)
        self.devices = {h.n: "flannel-wg" if h.n == 1 else f"oflw{os.getpid() % 10000}w{h.n}" for h in self.hosts}
        self.backends: dict[int, WireguardBackend] = {}
        self.leases: dict[int, Lease] = {}
        for h in self.hosts:
            rig.defer(lambda dev=self.devices[h.n]: WireguardGo(dev).stop())  # by the PID its socket reports
            self.start(h.n)
        for h in self.hosts:
            self.backends[h.n].reconcile(self.peers(h.n))

    def start(self, n: int) -> WireguardBackend:
        """A backend on host n (as a (re)started agent makes it): setup, activate."""
        h = self.hosts[n - 1]
        backend = WireguardBackend(self.config, local_host(h), device=self.devices[n],
                                   key_file=str(self.rig.tmp / f"h{n}" / "wgkey"))
        done = backend.setup(self.config, local_host(h))
        backend.activate(h.subnet)
        self.backends[n], self.leases[n] = backend, host_lease(h, done.backend_type, done.backend_data)
        return backend

    def peers(self, n: int) -> dict[str, Lease]:
        return {lease.key: lease for m, lease in self.leases.items() if m != n}

    def device(self, n: int) -> WireguardGo:
        return WireguardGo(self.devices[n])

    def ping_matrix(self) -> list[tuple[int, int]]:
        return [(a.n, b.n) for a in self.hosts for b in self.hosts
                if a is not b and not a.ping_from_container(b.container_ip)]


@pytest.fixture(scope="module")
def wg():
    with Rig(f"oflw-{os.getpid()}-") as rig:
        yield WgRig(rig)


def test_containers_ping_across_hosts_over_wireguard_go(wg):
    assert wg.ping_matrix() == []
    stats = wg.backends[2].stats()["wireguard"]
    assert stats["path"] == "wireguard-go" and stats["peers"] == 2 and stats["listen_port"] == 51820
    state = wg.device(1).uapi.get()
    peer2 = state.peers[wg.leases[2].attrs.backend_data["PublicKey"]]
    assert (peer2.endpoint, peer2.allowed_ips, peer2.keepalive) == ("192.168.81.12:51820", ("10.5.2.0/24",), 25)
    assert wg.leases[1].attrs.backend_type == "wireguard" and set(wg.leases[1].attrs.backend_data) == {
        "PublicKey", "Port"}
    routes = wg.rig.run(wg.hosts[0].ns, "ip", "-4", "route", "show", "10.5.0.0/16").stdout
    assert "dev flannel-wg" in routes and "proto 70" in routes


def test_a_restarted_backend_keeps_its_key_device_and_peers(wg):
    before = {n: wg.device(n).uapi.get() for n in (1, 2, 3)}
    pid = wg.device(2).pid()
    old_key = wg.leases[2].attrs.backend_data["PublicKey"]
    wg.backends[2].close()
    restarted = wg.start(2)  # a new agent on host 2: the same key file
    restarted.reconcile(wg.peers(2))
    assert wg.leases[2].attrs.backend_data["PublicKey"] == old_key
    assert wg.device(2).pid() == pid  # wireguard-go was kept, not restarted
    # Nothing was rewritten: the peers' config on every host is as it was.
    assert {n: wg.device(n).uapi.get() for n in (1, 2, 3)} == before
    assert wg.ping_matrix() == []


def test_reconcile_brings_back_a_dead_wireguard_go_and_removes_stale_peers(wg):
    pid = wg.device(3).pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not wg.device(3).running(), 5, what="wireguard-go gone")
    stranger = Lease(netaddr.IPNetwork("10.5.9.0/24"),
                     LeaseAttrs("192.168.81.19", None, "wireguard",
                                {"PublicKey": "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="}))
    wg.backends[3].reconcile({**wg.peers(3), stranger.key: stranger})
    assert wg.device(3).pid() not in (None, pid)
    assert len(wg.device(3).uapi.get().peers) == 3
    wg.backends[3].reconcile(wg.peers(3))  # the stranger's lease went
    assert set(wg.device(3).uapi.get().peers) == {wg.leases[n].attrs.backend_data["PublicKey"] for n in (1, 2)}
    assert wg.ping_matrix() == []


def test_a_lease_claiming_our_key_or_a_bad_one_gets_no_peer(wg):
    own_key = wg.leases[1].attrs.backend_data["PublicKey"]
    thief = Lease(netaddr.IPNetwork("10.5.8.0/24"),
                  LeaseAttrs("192.168.81.18", None, "wireguard", {"PublicKey": own_key, "Port": 51820}))
    broken = Lease(netaddr.IPNetwork("10.5.7.0/24"),
                   LeaseAttrs("192.168.81.17", None, "wireguard", {"PublicKey": "short"}))
    wg.backends[1].reconcile({**wg.peers(1), thief.key: thief, broken.key: broken})
    peers = wg.device(1).uapi.get().peers
    assert own_key not in peers and len(peers) == 2
    assert all(p.allowed_ips != ("10.5.8.0/24",) for p in peers.values())


def test_a_switch_to_vxlan_leaves_no_wireguard_behind(wg):
    h1 = wg.hosts[0]
    pid = wg.device(1).pid()
    with nl.open_ipr(h1.ns) as ipr:
        removed = remove_leftovers(ipr, config({"Type": "vxlan"}), h1.iface_index)
        assert "wireguard device flannel-wg" in removed
        assert nl.link_index(ipr, "flannel-wg") is None
        assert netaddr.IPNetwork("10.5.0.0/16") not in nl.main_routes(ipr)
    # wireguard-go ends with its TUN; its socket goes with it.
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z",
             5, what="wireguard-go of flannel-wg ended")
    assert not os.path.exists("/var/run/wireguard/flannel-wg.sock")
