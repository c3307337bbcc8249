"""The host-gw backend on real netlink: three namespace "hosts" on one underlay bridge."""

from __future__ import annotations

import os

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
from pyroute2 import IPRoute

from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.base import BackendSetup, LocalHost
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.hostgw.backend import HostGwBackend
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.registry import make_backend
from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import HostNetworkError
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.lease import Lease, LeaseAttrs

pytestmark = pytest.mark.lab

HOSTGW = {"Type": "host-gw"}


def far_lease(n: int = 9) -> Lease:
    """A host-gw peer whose PublicIP is not on our underlay link."""
    return Lease(netaddr.IPNetwork(f"10.5.{n}.0/24"), LeaseAttrs(f"192.168.99.{n}", None, "host-gw", None))


def test_setup_creates_nothing_and_returns_underlay_mtu(lab):
    h1 = lab.hosts[0]
    links_before = {link.get("ifname") for link in _links(h1.ns)}
    done = make_backend(config(HOSTGW), local_host(h1)).setup(config(HOSTGW), local_host(h1))
    assert done == BackendSetup("host-gw", None, 1500)
    assert {link.get("ifname") for link in _links(h1.ns)} == links_before
    assert host_lease(h1, "host-gw").attrs.to_json() == (
        '{"PublicIP":"192.168.81.11","PublicIPv6":null,"BackendType":"host-gw"}')


def test_containers_ping_across_hosts(lab):
    start(lab, HOSTGW)
    h1, h2, h3 = lab.hosts
    assert plane(h1.ns).routes == {"10.5.2.0/24": (h2.public_ip, "eth0", False),
                                   "10.5.3.0/24": (h3.public_ip, "eth0", False)}
    assert h1.ping_from_container(h2.container_ip)
    assert h2.ping_from_container(h3.container_ip)
    assert h3.ping_from_container(h1.container_ip)


def test_setup_and_add_peer_twice_change_nothing(lab):
    backends, leases = start(lab, HOSTGW)
    h1 = lab.hosts[0]
    before = plane(h1.ns)
    with netlink_changes(h1.ns) as changes:
        backends[1].setup(config(HOSTGW), local_host(h1))
        backends[1].activate(h1.subnet)
        backends[1].add_peer(leases[2])
        backends[1].add_peer(leases[3])
        backends[1].reconcile(peers_of(h1, leases))
    assert changes == []
    assert plane(h1.ns).routes == before.routes


def test_remove_peer_removes_only_its_route(lab):
    backends, leases = start(lab, HOSTGW)
    h1, h2, h3 = lab.hosts
    backends[1].remove_peer(leases[2])
    assert set(plane(h1.ns).routes) == {"10.5.3.0/24"}
    assert not h1.ping_from_container(h2.container_ip, tries=1)
    assert h1.ping_from_container(h3.container_ip)
    backends[1].remove_peer(leases[2])  # again: no error


def test_peer_not_on_our_link_gets_a_clear_error(lab):
    backends, leases = start(lab, HOSTGW)
    h1 = lab.hosts[0]
    with pytest.raises(HostNetworkError) as caught:
        backends[1].add_peer(far_lease())
    message = str(caught.value)
    assert "10.5.9.0-24" in message and "192.168.99.9" in message and "192.168.81.0/24" in message
    assert "host-gw needs L2 adjacency; use vxlan" in message
    assert "10.5.9.0/24" not in plane(h1.ns).routes

    # reconcile programs every other peer first, then reports the bad one(s).
    ip(h1.ns, "route", "del", "10.5.2.0/24")
    peers = {**peers_of(h1, leases), far_lease().key: far_lease(), far_lease(8).key: far_lease(8)}
    with pytest.raises(HostNetworkError) as caught:
        backends[1].reconcile(peers)
    assert "host-gw peer 10.5.9.0-24" in str(caught.value) and "host-gw peer 10.5.8.0-24" in str(caught.value)
    assert set(plane(h1.ns).routes) == {"10.5.2.0/24", "10.5.3.0/24"}
    assert h1.ping_from_container(lab.hosts[1].container_ip)


def test_reconcile_repairs_drift_and_removes_only_our_stale_routes(lab):
    backends, leases = start(lab, HOSTGW)
    h1, h2, h3 = lab.hosts
    ip(h1.ns, "route", "del", "10.5.2.0/24")
    ip(h1.ns, "route", "replace", "10.5.3.0/24", "via", h2.public_ip)  # wrong gateway, proto boot
    ip(h1.ns, "route", "add", "10.5.50.0/24", "via", h2.public_ip, "proto", str(RTPROT))  # ours, stale
    ip(h1.ns, "route", "add", "10.5.60.0/24", "via", h2.public_ip)  # somebody else's
    assert not h1.ping_from_container(h2.container_ip, tries=1)

    assert backends[1].reconcile(peers_of(h1, leases)) == 3  # a route added, one replaced, one deleted
    assert backends[1].reconcile(peers_of(h1, leases)) == 0
    p = plane(h1.ns)
    assert p.routes == {"10.5.2.0/24": (h2.public_ip, "eth0", False), "10.5.3.0/24": (h3.public_ip, "eth0", False)}
    assert "10.5.60.0/24" in p.foreign_routes
    assert h1.ping_from_container(h2.container_ip)
    assert h1.ping_from_container(h3.container_ip)


def test_rounds_at_rest_are_skipped_until_the_kernel_notifies_a_change(lab):
    backends, leases = start(lab, HOSTGW)
    h1, h2 = lab.hosts[:2]
    backend, peers = backends[1], peers_of(h1, leases)
    dumps = brought_to_rest(backend, peers, h1, h2)
    rounds = len(dumps)
    ip(h1.ns, "route", "del", "10.5.2.0/24")
    assert backend.reconcile(peers) == 1 and len(dumps) == rounds + 1
    assert backend.reconcile(peers) == 0 and len(dumps) == rounds + 1
    ip(h1.ns, "addr", "add", "192.168.82.11/24", "dev", "eth0")  # the underlay changed: a full round
    assert backend.reconcile(peers) == 0 and len(dumps) == rounds + 2
    assert h1.ping_from_container(h2.container_ip)


def test_skips_other_backends_and_own_lease(lab):
    backends, leases = start(lab, HOSTGW)
    h1 = lab.hosts[0]
    before = plane(h1.ns).routes
    vxlan_peer = Lease(netaddr.IPNetwork("10.5.20.0/24"),
                       LeaseAttrs("192.168.81.20", None, "vxlan", {"VNI": 1, "VtepMAC": "0e:00:00:00:00:20"}))
    backends[1].add_peer(vxlan_peer)
    backends[1].add_peer(leases[1])
    backends[1].reconcile({**peers_of(h1, leases), vxlan_peer.key: vxlan_peer, leases[1].key: leases[1]})
    assert plane(h1.ns).routes == before


def test_takes_over_routes_left_by_the_vxlan_backend(lab):
    """Switching a host from vxlan to host-gw: our vxlan routes become host-gw routes."""
    h1, h2, h3 = lab.hosts
    ip(h1.ns, "link", "add", "flannel.1", "type", "vxlan", "id", "1", "dstport", "8472", "dev", "eth0")
    ip(h1.ns, "link", "set", "flannel.1", "up")
    ip(h1.ns, "route", "add", "10.5.2.0/24", "via", "10.5.2.0", "dev", "flannel.1", "onlink", "proto", str(RTPROT))
    backends, leases = start(lab, HOSTGW)
    assert plane(h1.ns).routes["10.5.2.0/24"] == (h2.public_ip, "eth0", False)
    assert h1.ping_from_container(h2.container_ip)


def test_missing_underlay_interface_is_a_clear_error(lab):
    h1 = lab.hosts[0]
    host = local_host(h1)
    gone = LocalHost(host.public_ip, "eth9", 999, 1500, netns=h1.ns)
    with pytest.raises(HostNetworkError, match="underlay interface eth9 .* does not exist"):
        HostGwBackend(config(HOSTGW), gone).setup()


def test_missing_namespace_is_a_clear_error_and_not_created():
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    host = LocalHost("192.168.81.11", "eth0", 2, 1500, netns="oflb-does-not-exist")
    with pytest.raises(HostNetworkError, match="network namespace 'oflb-does-not-exist'"):
        HostGwBackend(config(HOSTGW), host).setup()
    assert not os.path.exists("/run/netns/oflb-does-not-exist")


def _links(ns: str):
    with IPRoute(netns=ns, flags=0) as ipr:
        return list(ipr.get_links())
