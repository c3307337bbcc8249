"""This host's interfaces and their addresses, read over netlink in one pass.

The underlay choice (`underlay.py`) matches names and addresses against this snapshot, and
an error names what the host has from it, so what is matched and what is shown agree.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from ..errors import HostNetworkError
from .netlink import IPRouteAPI, NetlinkError, dump


@dataclass(frozen=True)
class Interface:
    name: str
    index: int
    mtu: int
    ipv4: tuple[str, ...]  # in the kernel's order: the first is the primary address
    ipv6: tuple[str, ...]  # global ones only (no fe80::/10): a peer cannot reach a link-local one


def read_interfaces(ipr: IPRouteAPI) -> list[Interface]:
    """Every interface, by index (as upstream flannel lists them: net.Interfaces())."""
    v4: dict[int, list[str]] = {}
    v6: dict[int, list[str]] = {}
    for family, into in ((socket.AF_INET, v4), (socket.AF_INET6, v6)):
        for addr in dump("addresses", ipr.get_addr, family=family):
            address = addr.get("IFA_ADDRESS") if family == socket.AF_INET6 else addr.get("IFA_LOCAL")
            address = address or addr.get("IFA_ADDRESS")
            if address and not (family == socket.AF_INET6 and address.lower().startswith("fe80:")):
                into.setdefault(int(addr["index"]), []).append(address)
    found = []
    for link in dump("links", ipr.get_links):
        index = int(link["index"])
        found.append(Interface(link.get("IFLA_IFNAME") or f"#{index}", index, int(link.get("IFLA_MTU") or 0),
                               tuple(v4.get(index, ())), tuple(v6.get(index, ()))))
    return sorted(found, key=lambda i: i.index)


def describe(interfaces: list[Interface]) -> str:
    """`lo (127.0.0.1), eth0 (192.168.81.11), eth1 (no IPv4 address)`: for error messages."""
    parts = []
    for iface in interfaces:
        addresses = ", ".join(iface.ipv4 + iface.ipv6) or "no address"
        parts.append(f"{iface.name} ({addresses})")
    return ", ".join(parts) or "no interfaces"


def route_to(ipr: IPRouteAPI, address: str) -> tuple[int, str | None]:
    """The output interface index and preferred source address of the kernel's route to
    *address* (`ip route get`)."""
    try:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        answer = list(ipr.route("get", dst=address, family=family))
    except NetlinkError as exc:
        code = getattr(exc, "code", None) or 0
        reason = "no route" if code in (errno.ENETUNREACH, errno.EHOSTUNREACH) else errno.errorcode.get(code, str(code))
        raise HostNetworkError(f"this host has no route to {address} ({reason})") from None
    for route in answer:
        oif = route.get("RTA_OIF")
        if oif:
            return int(oif), route.get("RTA_PREFSRC")
    raise HostNetworkError(f"the route to {address} names no interface")
