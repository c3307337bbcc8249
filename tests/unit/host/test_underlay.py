"""The underlay choice (--iface, --iface-regex, --iface-can-reach, --public-ip) on real netlink.

One host namespace of a rig (``lab.rig.Rig``, prefix ``ofli-u<pid>-``), built once for the module:

    eth0  192.168.81.11/24  on switch ul (192.168.81.2), the default route
    eth1  192.168.82.11/24 and 192.168.82.77/24 on switch n2; 198.51.100.0/24 via 192.168.82.1
    eth2  no IPv4 address, on switch n2

and a bare namespace (lo only: no route at all). Nothing touches the root namespace.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import FlannelError, HostNetworkError
from ansible_collections.overlaynet.flannel.plugins.module_utils.host.underlay import (
    Underlay,
    UnderlayChoice,
    check_choice,
    select_underlay,
)
from lab import netns
from lab.rig import Rig

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


class Host:
    def __init__(self, ns: str, bare: str) -> None:
        self.ns, self.bare = ns, bare

    def pick(self, **choice: object) -> Underlay:
        return select_underlay(UnderlayChoice.of(**choice), self.ns)  # type: ignore[arg-type]

    def index(self, name: str) -> int:
        return netns.ifindex(self.ns, name)


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    with Rig(f"ofli-u{os.getpid()}-") as rig:
        rig.build_switch(offset=2)
        ns = rig.node("h", 11)
        netns.ip(ns, "route", "add", "default", "dev", "eth0")
        rig.add_network("n2", "192.168.82.0/24")
        rig.nic(ns, "eth1", "n2", 11)
        netns.ip_batch(ns, ["addr add 192.168.82.77/24 dev eth1", "route add 198.51.100.0/24 via 192.168.82.1"])
        netns.add_veth(ns, "eth2", rig.ns("n2"), "noaddr")
        netns.ip(ns, "link", "set", "eth2", "up")
        yield Host(ns, rig.namespace("bare"))


def test_without_a_choice_the_default_route_interface_and_its_address(host):
    got = host.pick()
    assert got == Underlay("eth0", host.index("eth0"), 1500, "192.168.81.11", "192.168.81.11", None)


def test_iface_by_name_or_by_address(host):
    assert host.pick(iface="eth1") == Underlay("eth1", host.index("eth1"), 1500, "192.168.82.11", "192.168.82.11")
    by_address = host.pick(iface="192.168.82.77")
    assert (by_address.iface, by_address.public_ip, by_address.iface_ip) == ("eth1", "192.168.82.77", "192.168.82.77")


def test_ifaces_are_tried_in_order_and_one_without_ipv4_is_passed_over(host):
    assert host.pick(iface=["eth9", "192.168.99.1", "eth1", "eth0"]).iface == "eth1"
    assert host.pick(iface=["eth2", "eth0"]).iface == "eth0"  # eth2 exists but has no IPv4 address


def test_iface_regex_matches_addresses_first_then_names(host):
    assert host.pick(regexes=[r"^192\.168\.82\."]).public_ip == "192.168.82.11"
    assert host.pick(regexes=[r"82\.77"]).public_ip == "192.168.82.77"  # the address matched, not the first
    assert host.pick(regexes=["^eth1$"]).iface == "eth1"
    # eth0's name matches too, but an address match on any interface comes first (as upstream)
    assert host.pick(regexes=[r"^eth0$|^192\.168\.82\.11$"]).iface == "eth1"
    # a regex with a comma (only the agent's --iface-regex and a YAML list keep it whole)
    assert host.pick(regexes=[r"^192\.168\.8[2]{1,2}\.1"]).public_ip == "192.168.82.11"


def test_regexes_are_tried_in_order(host):
    assert host.pick(regexes=["^nothing$", "^eth2$", "^eth0$"]).iface == "eth0"  # eth2: no IPv4 address


def test_can_reach_takes_the_route_interface_and_source(host):
    assert host.pick(can_reach="192.168.82.200").iface == "eth1"
    routed = host.pick(can_reach="198.51.100.7")  # via a gateway on eth1
    assert (routed.iface, routed.public_ip) == ("eth1", "192.168.82.11")
    assert host.pick(can_reach="192.168.81.2").iface == "eth0"


def test_precedence_iface_then_regex_then_can_reach(host):
    assert host.pick(iface="eth0", regexes=["^eth1$"], can_reach="192.168.82.200").iface == "eth0"
    assert host.pick(iface="eth9", regexes=["^eth1$"], can_reach="192.168.81.2").iface == "eth1"
    assert host.pick(iface="eth9", regexes=["^eth9$"], can_reach="192.168.82.200").iface == "eth1"
    # with an explicit choice, public_ip only sets the advertised address
    assert host.pick(iface="eth0", public_ip="192.168.82.11").iface == "eth0"


def test_public_ip_overrides_the_advertised_address_only(host):
    got = host.pick(iface="eth1", public_ip="203.0.113.7", public_ipv6="2001:db8::7")
    assert got == Underlay("eth1", host.index("eth1"), 1500, "203.0.113.7", "192.168.82.11", "2001:db8::7")


def test_a_public_ip_alone_picks_the_interface_holding_it_else_the_default_route(host):
    held = host.pick(public_ip="192.168.82.77")
    assert (held.iface, held.public_ip, held.iface_ip) == ("eth1", "192.168.82.77", "192.168.82.77")
    nat = host.pick(public_ip="203.0.113.7")  # behind NAT: nobody holds it
    assert (nat.iface, nat.public_ip, nat.iface_ip) == ("eth0", "203.0.113.7", "192.168.81.11")


def test_a_choice_that_matches_nothing_names_each_ask_and_what_the_host_has(host):
    with pytest.raises(HostNetworkError) as caught:
        host.pick(iface=["eth9", "192.168.99.1", "eth2"], regexes=["^wlan"])
    message = str(caught.value)
    for part in ("iface 'eth9': no such interface", "iface '192.168.99.1': no interface has this address",
                 "iface 'eth2': interface eth2 has no IPv4 address",
                 "iface-regex '^wlan': matches no interface name or IPv4 address",
                 "eth0 (192.168.81.11)", "eth1 (192.168.82.11, 192.168.82.77)", "eth2 (no address)"):
        assert part in message, message


def test_no_route_anywhere_is_a_clear_error(host):
    with pytest.raises(HostNetworkError, match=r"iface-can-reach 192\.0\.2\.1: this host has no route to 192\.0\.2\.1"):
        select_underlay(UnderlayChoice(can_reach="192.0.2.1"), host.bare)
    with pytest.raises(HostNetworkError, match="no IPv4 default route; set iface"):
        select_underlay(UnderlayChoice(), host.bare)
    with pytest.raises(HostNetworkError, match="network namespace 'ofli-nonexistent'"):
        select_underlay(UnderlayChoice(), "ofli-nonexistent")


@pytest.mark.parametrize(("choice", "message"), [
    (UnderlayChoice(regexes=("(",)), r"iface-regex '\(' is not a valid regular expression: missing \)"),
    (UnderlayChoice(regexes=("a{1,2}{3}",)), "is not a valid regular expression"),
    (UnderlayChoice(ifaces=("eth0/1",)), "iface 'eth0/1' is neither an IP address nor an interface name"),
    (UnderlayChoice(ifaces=("x" * 300,)), r"iface 'xxxx.*\.\.\. \(300 long\) is neither"),
    (UnderlayChoice(can_reach="etcd.example"), "iface-can-reach 'etcd.example' is not an IP address"),
    (UnderlayChoice(public_ip="192.168.1.300"), "public-ip '192.168.1.300' is not an IPv4 address"),
    (UnderlayChoice(public_ip="2001:db8::1"), "public-ip '2001:db8::1' is not an IPv4 address"),
    (UnderlayChoice(public_ipv6="10.0.0.1"), "public-ipv6 '10.0.0.1' is not an IPv6 address"),
], ids=["regex", "regex-repeat", "iface-slash", "iface-long", "can-reach", "public-ip", "public-ip-v6", "public-ipv6"])
def test_hostile_values_are_clear_errors_before_netlink(choice, message):
    with pytest.raises(FlannelError, match=message):
        check_choice(choice)
    with pytest.raises(FlannelError, match=message):
        select_underlay(choice, "ofli-never-opened")  # checked before the namespace is opened
