"""Subnet key codec: `10.5.72.0-24`, dual stack `10.5.72.0-24&fc00::-64` (flannel's format)."""

from __future__ import annotations

import re

from ..deps import netaddr
from ..errors import LeaseError, shown

_V4 = r"([0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})-([0-9]{1,2})"
_V6 = r"([0-9a-fA-F:.]+)-([0-9]{1,3})"
_KEY = re.compile(rf"^{_V4}(?:&{_V6})?$")


def encode_subnet_key(subnet: netaddr.IPNetwork, ipv6_subnet: netaddr.IPNetwork | None = None) -> str:
    key = f"{subnet.network}-{subnet.prefixlen}"
    if ipv6_subnet is not None:
        key += f"&{ipv6_subnet.network}-{ipv6_subnet.prefixlen}"
    return key


def decode_subnet_key(key: str) -> tuple[netaddr.IPNetwork, netaddr.IPNetwork | None]:
    """Parse a key (the part after `<prefix>/subnets/`); raise LeaseError when it is not one."""
    match = _KEY.fullmatch(key)
    if not match:
        raise LeaseError(f"subnet key {shown(key)} is not of the form A.B.C.D-LEN[&IPV6-LEN]")
    ip4, len4, ip6, len6 = match.groups()
    subnet = _network(key, ip4, len4, 4)
    ipv6_subnet = _network(key, ip6, len6, 6) if ip6 is not None else None
    return subnet, ipv6_subnet


def _network(key: str, addr: str, length: str, version: int) -> netaddr.IPNetwork:
    try:
        ip = netaddr.IPAddress(addr, version=version, flags=netaddr.INET_PTON)
        net = netaddr.IPNetwork(f"{ip}/{length}", version=version)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise LeaseError(f"subnet key {shown(key)}: {addr}/{length} is not a valid IPv{version} network") from None
    if net.network != net.ip:
        raise LeaseError(f"subnet key {shown(key)}: {addr} is not the network address of /{length}")
    return net
