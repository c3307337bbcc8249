"""The vxlan backend on real netlink: three namespace "hosts" on one underlay bridge."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import netaddr
import pytest
from backend_lab import (
    RTPROT,
    brought_to_rest,
    config,
    host_lease,
    ip,
    local_host,
    netlink_changes,
    peers_of,
    plane,
    start,
)

from ansible_collections.overlaynet.flannel.plugins.module_utils.backends import base
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.base import BackendSetup, LocalHost
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.hostgw.backend import HostGwBackend
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.registry import make_backend
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.vxlan.backend import VxlanBackend
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.vxlan.mac import vtep_mac
from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import HostNetworkError
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.lease import Lease, LeaseAttrs

pytestmark = pytest.mark.lab

VXLAN = {"Type": "vxlan"}


def test_make_backend_dispatches_on_type():
    from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.base import LocalHost

    host = LocalHost("192.168.81.11", "eth0", 2, 1500)
    assert isinstance(make_backend(config(VXLAN), host), VxlanBackend)
    assert isinstance(make_backend(config({"Type": "host-gw"}), host), HostGwBackend)
    try:  # udp is another module, imported only when asked for
        backend = make_backend(config({"Type": "udp"}), host)
    except ImportError:
        pytest.skip("backends/udp.py is not there yet")
    assert type(backend).__name__ == "UdpBackend"


def test_setup_creates_flannel_device_and_returns_lease_data(lab):
    h1 = lab.hosts[0]
    done = make_backend(config(VXLAN), local_host(h1)).setup(config(VXLAN), local_host(h1))

    mac = done.backend_data["VtepMAC"]
    assert done == BackendSetup("vxlan", {"VNI": 1, "VtepMAC": mac}, 1450)
    assert re.fullmatch(r"[0-9a-f][26ae](:[0-9a-f]{2}){5}", mac)
    link = plane(h1.ns).link
    assert link.get(("IFLA_LINKINFO", "IFLA_INFO_KIND")) == "vxlan"
    assert link.get("address") == mac and link.get("mtu") == 1450
    p = plane(h1.ns)
    assert (p.vxlan("IFLA_VXLAN_ID"), p.vxlan("IFLA_VXLAN_LOCAL"), p.vxlan("IFLA_VXLAN_LINK"),
            p.vxlan("IFLA_VXLAN_PORT"), p.vxlan("IFLA_VXLAN_LEARNING")) == (1, h1.public_ip, h1.iface_index, 8472, 0)


def test_containers_ping_across_hosts(lab):
    backends, leases = start(lab, VXLAN)
    h1, h2, h3 = lab.hosts

    assert h1.ping_from_container(h2.container_ip)
    assert h2.ping_from_container(h3.container_ip)
    assert h3.ping_from_container(h1.container_ip)
    # flanneld's shapes: /32 device address, neighbour .0 -> VtepMAC, FDB MAC -> PublicIP, onlink route.
    p = plane(h1.ns)
    assert p.addresses == ["10.5.1.0/32"] and p.link["flags"] & 1
    mac2 = leases[2].attrs.backend_data["VtepMAC"]
    assert p.neighbours == {"10.5.2.0": mac2, "10.5.3.0": leases[3].attrs.backend_data["VtepMAC"]}
    assert (mac2, h2.public_ip) in p.fdb and len(p.fdb) == 2
    assert p.routes == {"10.5.2.0/24": ("10.5.2.0", "flannel.1", True), "10.5.3.0/24": ("10.5.3.0", "flannel.1", True)}


def test_setup_and_add_peer_twice_change_nothing(lab):
    backends, leases = start(lab, VXLAN)
    h1 = lab.hosts[0]
    before = plane(h1.ns)
    with netlink_changes(h1.ns) as changes:
        again = backends[1].setup(config(VXLAN), local_host(h1))
        backends[1].activate(h1.subnet)
        backends[1].add_peer(leases[2])
        backends[1].add_peer(leases[3])
        backends[1].reconcile(peers_of(h1, leases))
    assert changes == []
    assert again.backend_data == leases[1].attrs.backend_data
    with netlink_changes(h1.ns) as changes:  # the watch does see a real change
        ip(h1.ns, "route", "del", "10.5.2.0/24")
        backends[1].add_peer(leases[2])
    assert any("10.5.2.0/24" in line for line in changes)
    after = plane(h1.ns)
    assert (after.routes, after.neighbours, after.fdb, after.addresses) == (
        before.routes, before.neighbours, before.fdb, before.addresses)


def test_remove_peer_removes_route_neighbour_and_fdb(lab):
    backends, leases = start(lab, VXLAN)
    h1, h2, h3 = lab.hosts

    backends[1].remove_peer(leases[2])
    p = plane(h1.ns)
    assert "10.5.2.0/24" not in p.routes and "10.5.2.0" not in p.neighbours
    assert not any(dst == h2.public_ip for _mac, dst in p.fdb)
    assert "10.5.3.0/24" in p.routes and "10.5.3.0" in p.neighbours  # the other peer stays
    assert not h1.ping_from_container(h2.container_ip, tries=1)
    assert h1.ping_from_container(h3.container_ip)
    backends[1].remove_peer(leases[2])  # again: nothing left to remove, no error


def test_reconcile_repairs_route_fdb_neighbour_and_device(lab):
    backends, leases = start(lab, VXLAN)
    h1, h2 = lab.hosts[:2]
    mac2 = leases[2].attrs.backend_data["VtepMAC"]
    want = plane(h1.ns)

    ip(h1.ns, "route", "del", "10.5.2.0/24")
    ip(h1.ns, "fdb", "del", mac2, "dev", "flannel.1", "dst", h2.public_ip)
    ip(h1.ns, "neigh", "del", "10.5.3.0", "dev", "flannel.1")
    assert not h1.ping_from_container(h2.container_ip, tries=1)
    assert backends[1].reconcile(peers_of(h1, leases)) == 3  # what it wrote back: the agent's repairs metric
    got = plane(h1.ns)
    assert (got.routes, got.neighbours, got.fdb) == (want.routes, want.neighbours, want.fdb)
    assert h1.ping_from_container(h2.container_ip)
    assert backends[1].reconcile(peers_of(h1, leases)) == 0  # no drift, nothing written

    ip(h1.ns, "link", "del", "flannel.1")
    assert not h1.ping_from_container(h2.container_ip, tries=1)
    assert backends[1].reconcile(peers_of(h1, leases)) == 1 + 3 * 2  # the device, each peer's three entries
    got = plane(h1.ns)
    assert got.link.get("address") == want.link.get("address") and got.link["flags"] & 1
    assert (got.addresses, got.routes, got.neighbours, got.fdb) == (
        want.addresses, want.routes, want.neighbours, want.fdb)
    assert h1.ping_from_container(h2.container_ip)
    assert lab.hosts[2].ping_from_container(h1.container_ip)


def test_rounds_at_rest_are_skipped_until_the_kernel_notifies_a_change(lab, monkeypatch):
    """A round after a clean one, with no change notified by anyone but us, reads no dump;
    a route or FDB entry deleted by hand is still repaired by the next round."""
    backends, leases = start(lab, VXLAN)
    h1, h2 = lab.hosts[:2]
    backend, peers = backends[1], peers_of(h1, leases)
    mac2 = leases[2].attrs.backend_data["VtepMAC"]
    dumps = brought_to_rest(backend, peers, h1, h2)
    rounds = len(dumps)

    ip(h1.ns, "route", "del", "10.5.2.0/24")
    assert backend.reconcile(peers) == 1 and len(dumps) == rounds + 1
    assert backend.reconcile(peers) == 0 and len(dumps) == rounds + 1  # our own write is no change
    ip(h1.ns, "fdb", "del", mac2, "dev", "flannel.1", "dst", h2.public_ip)  # FDB notes carry port id 0
    assert backend.reconcile(peers) == 1 and len(dumps) == rounds + 2
    assert backend.reconcile(peers) == 0 and len(dumps) == rounds + 2
    ip(h1.ns, "link", "set", "flannel.1", "mtu", "1400")
    backend.reconcile(peers)  # the link is set right through another socket: not counted as a write
    assert len(dumps) == rounds + 3
    assert plane(h1.ns).link.get("mtu") == 1450

    fewer = {leases[3].key: leases[3]}
    assert backend.reconcile(fewer) == 3 and len(dumps) == rounds + 4  # other peers: a full round
    monkeypatch.setattr(base, "FULL_ROUND_EVERY", 0.0)  # the full round that runs notified or not
    assert backend.reconcile(fewer) == 0 and len(dumps) == rounds + 5
    assert set(plane(h1.ns).routes) == {"10.5.3.0/24"}


def test_mac_reset_by_an_operator_is_repaired_with_all_peers(lab):
    backends, leases = start(lab, VXLAN)
    h1, h2, h3 = lab.hosts
    want = plane(h1.ns)
    ip(h1.ns, "link", "set", "flannel.1", "address", "02:00:00:00:00:01")  # flushes the neighbours too
    assert plane(h1.ns).neighbours == {}
    backends[1].add_peer(leases[2])  # any call that sees the device repairs it, for all known peers
    got = plane(h1.ns)
    assert got.link.get("address") == want.link.get("address")
    assert (got.routes, got.neighbours, got.fdb) == (want.routes, want.neighbours, want.fdb)
    assert h1.ping_from_container(h3.container_ip)


def test_reconcile_removes_stale_entries_and_keeps_foreign_routes(lab):
    """Routes of ours (proto 70) no peer needs go wherever they point (one a hostile lease once
    got, outside the Network, included); routes of other protocols stay."""
    backends, leases = start(lab, VXLAN)
    h1 = lab.hosts[0]
    ip(h1.ns, "route", "add", "10.5.200.0/24", "via", "192.168.81.99")  # somebody else's (proto boot)
    ip(h1.ns, "route", "add", "172.30.0.0/24", "via", "192.168.81.99", "proto", str(RTPROT))  # outside Network
    ip(h1.ns, "route", "add", "172.31.0.0/24", "via", "192.168.81.99")  # outside, somebody else's
    ip(h1.ns, "neigh", "add", "10.5.77.0", "lladdr", "02:00:00:00:00:77", "dev", "flannel.1", "nud", "permanent")

    backends[1].reconcile({leases[3].key: leases[3]})  # host 2 is gone
    p = plane(h1.ns)
    assert set(p.routes) == {"10.5.3.0/24"}
    assert "172.31.0.0/24" in p.foreign_routes
    assert set(p.neighbours) == {"10.5.3.0"}
    assert {dst for _mac, dst in p.fdb} == {lab.hosts[2].public_ip}
    assert "10.5.200.0/24" in p.foreign_routes


def test_vtep_mac_is_stable_across_a_new_setup(lab):
    h1 = lab.hosts[0]
    first = VxlanBackend(config(VXLAN), local_host(h1)).setup()
    ip(h1.ns, "link", "del", "flannel.1")
    second = VxlanBackend(config(VXLAN), local_host(h1)).setup()
    assert second.backend_data == first.backend_data
    assert plane(h1.ns).link.get("address") == first.backend_data["VtepMAC"]
    # Another host (other public IP) gets another MAC.
    other = VxlanBackend(config(VXLAN), local_host(lab.hosts[1])).setup()
    assert other.backend_data["VtepMAC"] != first.backend_data["VtepMAC"]


def test_behind_nat_the_device_sends_from_the_interface_address(lab):
    """--public-ip names an address this host does not hold: the lease (and the VTEP MAC) carry
    it, the device's local address stays the interface's (upstream: ExtAddr vs IfaceAddr)."""
    h1 = lab.hosts[0]
    nat = LocalHost("203.0.113.7", "eth0", h1.iface_index, 1500, netns=h1.ns, local_ip=h1.public_ip)
    done = VxlanBackend(config(VXLAN), nat).setup()
    assert plane(h1.ns).vxlan("IFLA_VXLAN_LOCAL") == h1.public_ip
    assert done.backend_data["VtepMAC"] == vtep_mac(1, "203.0.113.7")
    VxlanBackend(config(VXLAN), local_host(h1)).setup()  # back to the lab's own (public = local)
    assert plane(h1.ns).vxlan("IFLA_VXLAN_LOCAL") == h1.public_ip


def test_device_with_wrong_parameters_is_recreated(lab):
    h1 = lab.hosts[0]
    ip(h1.ns, "link", "add", "flannel.1", "type", "vxlan", "id", "1", "dstport", "4789", "local", h1.public_ip,
       "dev", "eth0")
    old_index = plane(h1.ns).link["index"]
    done = VxlanBackend(config(VXLAN), local_host(h1)).setup()
    p = plane(h1.ns)
    assert p.link["index"] != old_index and p.vxlan("IFLA_VXLAN_PORT") == 8472
    assert p.link.get("address") == done.backend_data["VtepMAC"]

    # Right parameters but a random MAC and MTU (e.g. left by flanneld): kept, MAC and MTU fixed.
    ip(h1.ns, "link", "set", "flannel.1", "address", "02:11:22:33:44:55", "mtu", "1400")
    index = p.link["index"]
    VxlanBackend(config(VXLAN), local_host(h1)).setup()
    p = plane(h1.ns)
    assert p.link["index"] == index
    assert (p.link.get("address"), p.link.get("mtu")) == (done.backend_data["VtepMAC"], 1450)


def test_direct_routing_on_same_l2_uses_plain_route(lab):
    backends, leases = start(lab, {"Type": "vxlan", "DirectRouting": True})
    h1, h2, h3 = lab.hosts
    far = Lease(netaddr.IPNetwork("10.5.9.0/24"),
                LeaseAttrs("192.168.99.9", None, "vxlan", {"VNI": 1, "VtepMAC": "0e:00:00:00:00:09"}))
    backends[1].add_peer(far)  # not on our link: the vxlan way

    p = plane(h1.ns)
    assert p.routes == {"10.5.2.0/24": (h2.public_ip, "eth0", False), "10.5.3.0/24": (h3.public_ip, "eth0", False),
                        "10.5.9.0/24": ("10.5.9.0", "flannel.1", True)}
    assert p.neighbours == {"10.5.9.0": "0e:00:00:00:00:09"}
    assert p.fdb == {("0e:00:00:00:00:09", "192.168.99.9")}
    assert h1.ping_from_container(h2.container_ip)
    assert h3.ping_from_container(h1.container_ip)
    backends[1].remove_peer(leases[2])
    assert "10.5.2.0/24" not in plane(h1.ns).routes


def test_skips_other_backends_own_and_malformed_leases(lab):
    backends, leases = start(lab, VXLAN)
    h1 = lab.hosts[0]
    before = plane(h1.ns)
    odd = [
        Lease(netaddr.IPNetwork("10.5.20.0/24"), LeaseAttrs("192.168.81.20", None, "host-gw", None)),
        Lease(netaddr.IPNetwork("10.5.21.0/24"), LeaseAttrs("192.168.81.21", None, "vxlan", {"VNI": 1})),
        Lease(netaddr.IPNetwork("10.5.22.0/24"), LeaseAttrs("192.168.81.22", None, "vxlan", {"VtepMAC": "nope"})),
        Lease(netaddr.IPNetwork("10.5.23.0/24"), LeaseAttrs("192.168.81.23", None, "", None)),  # udp
        leases[1],  # our own
    ]
    for lease in odd:
        backends[1].add_peer(lease)
    backends[1].reconcile({**peers_of(h1, leases), **{lease.key: lease for lease in odd}})
    after = plane(h1.ns)
    assert (after.routes, after.neighbours, after.fdb) == (before.routes, before.neighbours, before.fdb)


def test_peer_with_a_new_mac_is_reprogrammed(lab):
    backends, leases = start(lab, VXLAN)
    h1, h2 = lab.hosts[:2]
    old_mac = leases[2].attrs.backend_data["VtepMAC"]
    # Host 2 comes back as upstream flanneld with a random MAC (a MAC change flushes even
    # permanent neighbours, so its flanneld programs its peers again).
    ip(h2.ns, "link", "set", "flannel.1", "address", "02:aa:bb:cc:dd:02")
    for lease in (leases[1], leases[3]):
        ip(h2.ns, "neigh", "replace", str(lease.subnet.network), "lladdr", lease.attrs.backend_data["VtepMAC"],
           "dev", "flannel.1", "nud", "permanent")
    moved = host_lease(h2, "vxlan", {"VNI": 1, "VtepMAC": "02:aa:bb:cc:dd:02"})
    backends[1].add_peer(moved)
    assert plane(h1.ns).neighbours["10.5.2.0"] == "02:aa:bb:cc:dd:02"
    assert h1.ping_from_container(h2.container_ip)
    backends[1].reconcile({**peers_of(h1, leases), moved.key: moved})
    assert (old_mac, h2.public_ip) not in plane(h1.ns).fdb
    # The old lease's removal must not tear down what the new one programmed.
    backends[1].remove_peer(leases[2])
    assert "10.5.2.0/24" in plane(h1.ns).routes


def test_custom_vni_port_and_mtu(lab):
    """Backend.MTU as upstream flannel reads it: the underlay MTU, so the device gets MTU - 50
    (upstream's device.go: `MTU: devAttrs.MTU - 50`); hosts of both kinds agree on 1350 here."""
    backends, leases = start(lab, {"Type": "vxlan", "VNI": 7, "Port": 4789, "MTU": 1400})
    h1, h2 = lab.hosts[:2]
    assert leases[1].attrs.backend_data["VNI"] == 7
    p = plane(h1.ns, "flannel.7")
    assert (p.vxlan("IFLA_VXLAN_ID"), p.vxlan("IFLA_VXLAN_PORT"), p.link.get("mtu")) == (7, 4789, 1350)
    assert backends[1].setup(config({"Type": "vxlan", "VNI": 7, "Port": 4789, "MTU": 1400}),
                             local_host(h1)).mtu == 1350  # what subnet.env and docker get
    assert h1.ping_from_container(h2.container_ip)


def test_failing_peer_does_not_stop_reconcile(lab):
    """A peer that cannot be programmed is reported; the others are programmed anyway."""
    backends, leases = start(lab, VXLAN)
    h1 = lab.hosts[0]
    ip(h1.ns, "route", "del", "10.5.3.0/24")
    bad = Lease(netaddr.IPNetwork("10.5.30.0/24"),
                LeaseAttrs("192.168.81.30", None, "vxlan", {"VNI": 1, "VtepMAC": "0e:00:00:00:00:30"}))
    # Make the neighbour for the bad peer impossible: a local address as its .0 gateway.
    ip(h1.ns, "addr", "add", "10.5.30.0/32", "dev", "docker0")
    with pytest.raises(HostNetworkError, match=r"vxlan peer 10\.5\.30\.0-24 \(192\.168\.81\.30\)"):
        backends[1].reconcile({**peers_of(h1, leases), bad.key: bad})
    assert "10.5.3.0/24" in plane(h1.ns).routes


def test_reconcile_with_50_peers_is_cheap(lab):
    h1 = lab.hosts[0]
    backend = VxlanBackend(config(VXLAN), local_host(h1))
    backend.setup()
    backend.activate(h1.subnet)
    peers = {}
    for i in range(50):
        mac = f"0e:00:00:00:01:{i:02x}"
        lease = Lease(netaddr.IPNetwork(f"10.5.{100 + i}.0/24"),
                      LeaseAttrs(f"192.168.81.{100 + i}", None, "vxlan", {"VNI": 1, "VtepMAC": mac}))
        peers[lease.key] = lease
    started = time.monotonic()
    backend.reconcile(peers)
    first = time.monotonic() - started
    started = time.monotonic()
    with netlink_changes(h1.ns) as changes:
        backend.reconcile(peers)
    steady = time.monotonic() - started - 0.5  # minus the monitor's settle time
    p = plane(h1.ns)
    assert len(p.routes) == 50 and len(p.neighbours) == 50 and len(p.fdb) == 50
    assert changes == []
    print(f"reconcile 50 peers: first {first * 1000:.0f} ms, steady {steady * 1000:.0f} ms")
    assert steady < 0.5


IN_NAMESPACE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.base import LocalHost
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.registry import make_backend
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.vxlan.mac import vtep_mac
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.lease import Lease, LeaseAttrs
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.config import NetworkConfig
import netaddr
args = json.loads(sys.argv[2])
cfg = NetworkConfig.from_dict({"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}})
backend = make_backend(cfg, LocalHost(args["ip"], "eth0", args["index"], 1500))  # netns None: where we run
done = backend.setup(cfg, LocalHost(args["ip"], "eth0", args["index"], 1500))
backend.activate(netaddr.IPNetwork(args["subnet"]))
peer = args["peer"]
backend.add_peer(Lease(netaddr.IPNetwork(peer["subnet"]), LeaseAttrs(peer["ip"], None, "vxlan", peer["data"])))
backend.reconcile({})  # no peers any more: removes what add_peer made
backend.add_peer(Lease(netaddr.IPNetwork(peer["subnet"]), LeaseAttrs(peer["ip"], None, "vxlan", peer["data"])))
print(json.dumps(done.backend_data))
"""


def test_production_path_runs_inside_the_host_namespace(lab):
    """The agent runs under `ip netns exec` with LocalHost.netns None: the current namespace."""
    h1, h2 = lab.hosts[:2]
    cfg = config(VXLAN)
    b2 = make_backend(cfg, local_host(h2))
    data2 = b2.setup(cfg, local_host(h2)).backend_data
    b2.activate(h2.subnet)
    collections = str(Path(sys.modules["ansible_collections"].__path__[0]).parent)
    args = {"ip": h1.public_ip, "index": h1.iface_index, "subnet": str(h1.subnet),
            "peer": {"ip": h2.public_ip, "subnet": str(h2.subnet), "data": data2}}
    out = subprocess.run(["ip", "netns", "exec", h1.ns, sys.executable, "-c", IN_NAMESPACE, collections,
                          json.dumps(args)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    data1 = json.loads(out.stdout)
    b2.add_peer(host_lease(h1, "vxlan", data1))
    assert plane(h1.ns).routes == {"10.5.2.0/24": ("10.5.2.0", "flannel.1", True)}
    assert h1.ping_from_container(h2.container_ip)
