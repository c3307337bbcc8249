"""This host's underlay: which interface, which address, which MTU (read over netlink)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import HostNetworkError
from .netlink import IPRouteAPI, open_ipr


@dataclass(frozen=True)
class Underlay:
    iface: str
    index: int
    mtu: int
    public_ip: str


def find_underlay(iface: str | None = None, public_ip: str | None = None) -> Underlay:
    """The interface to use (iface, else the one holding public_ip, else the default route's)
    and the public IP (given, else the interface's first IPv4 address)."""
    with open_ipr() as ipr:
        if iface:
            found = ipr.link_lookup(ifname=iface)
            if not found:
                names = sorted(link.get("ifname") for link in ipr.get_links())
                raise HostNetworkError(f"interface {iface!r} does not exist; this host has {', '.join(names)}")
            index = found[0]
        elif public_ip:
            index = _index_holding(ipr, public_ip)
        else:
            index = _default_route_index(ipr)
        link = ipr.get_links(index)[0]
        name, mtu = link.get("ifname"), int(link.get("mtu"))
        addrs = [a.get("address") for a in ipr.get_addr(family=2, index=index)]
    if public_ip is None:
        if not addrs:
            raise HostNetworkError(f"interface {name} has no IPv4 address; set public_ip or pick another iface")
        public_ip = addrs[0]
    return Underlay(name, index, mtu, public_ip)


def _index_holding(ipr: IPRouteAPI, address: str) -> int:
    for addr in ipr.get_addr(family=2):
        if addr.get("address") == address:
            return int(addr["index"])
    # A public IP that is not local (e.g. behind NAT): fall back to the default route.
    return _default_route_index(ipr)


def _default_route_index(ipr: IPRouteAPI) -> int:
    for route in ipr.get_default_routes(family=2):
        oif = route.get("oif")
        if oif:
            return int(oif)
        for hop in route.get("multipath") or []:
            if hop.get("oif"):
                return int(hop["oif"])
    raise HostNetworkError("this host has no IPv4 default route; set iface (or public_ip) explicitly")
