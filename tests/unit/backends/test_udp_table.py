"""The udp forwarder's peer table: longest prefix wins, and a rebuild takes the unchanged
peers' entries over instead of making them again."""

from __future__ import annotations

import ipaddress

from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.udp.table import PeerRoute, RouteTable


def route(n: int, prefixlen: int = 24, ip: str | None = None) -> PeerRoute:
    network = int(ipaddress.ip_address(f"10.5.{n}.0"))
    return PeerRoute(network, prefixlen, ip or f"192.168.81.{n}", 8285, False)


def test_the_longest_prefix_wins_and_unknown_destinations_find_nothing():
    table = RouteTable([route(2), route(0, 16, "192.168.81.99")])
    assert table.lookup(int(ipaddress.ip_address("10.5.2.7"))).ip == "192.168.81.2"
    assert table.lookup(int(ipaddress.ip_address("10.5.3.7"))).ip == "192.168.81.99"
    assert table.lookup(int(ipaddress.ip_address("10.6.0.1"))) is None


def test_a_rebuild_keeps_the_entries_of_unchanged_peers_and_makes_changed_ones_anew():
    old = RouteTable([route(2), route(3)])
    new = RouteTable([route(2), route(3, ip="192.168.81.33"), route(4)], old)
    assert new.entries[route(2)] is old.entries[route(2)]
    assert route(3) not in new.entries
    assert new.lookup(int(ipaddress.ip_address("10.5.3.1"))).ip == "192.168.81.33"
    assert new.lookup(int(ipaddress.ip_address("10.5.4.1"))).ip == "192.168.81.4"
    assert RouteTable([route(2)], new).entries[route(2)] is old.entries[route(2)]
