"""This host's underlay: which interface, which address, which MTU (read over netlink).

The choice follows upstream flanneld (pkg/ipmatch LookupExtIface and main.go):

- With none of ``iface``, ``iface-regex``, ``iface-can-reach``: the interface holding
  ``public-ip`` (or ``public-ipv6``) when one is given, else the default route's. One
  deliberate difference: a public IP no interface holds (the host is behind NAT) falls
  back to the default route's interface, where upstream gives up.
- Otherwise each ``iface`` in order (a name, or an address of the interface), then each
  ``iface-regex`` in order (matched against every interface's IPv4 addresses first, then
  against the names; unanchored, as Go's MatchString), then ``iface-can-reach`` (the
  interface and source address of the route to that address). The first that matches
  wins; none: an error naming each one asked and what the host has.
- The advertised address is ``public-ip`` when given, else the chosen interface's address
  (the one matched, else its first IPv4 address); ``public-ipv6`` is advertised as given.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import HostNetworkError, shown
from .interfaces import Interface, describe, read_interfaces, route_to
from .netlink import IPRouteAPI, open_ipr

IFNAMSIZ = 15  # the kernel's limit on an interface name (16 bytes with the NUL)


@dataclass(frozen=True)
class Underlay:
    iface: str
    index: int
    mtu: int
    public_ip: str  # advertised in the lease (PublicIP)
    iface_ip: str = ""  # the interface's own address (differs from public_ip behind NAT)
    public_ipv6: str | None = None  # advertised in the lease (PublicIPv6)


@dataclass(frozen=True)
class UnderlayChoice:
    """What the operator asked for: flanneld's --iface (repeatable), --iface-regex
    (repeatable), --iface-can-reach, --public-ip and --public-ipv6."""

    ifaces: tuple[str, ...] = ()
    regexes: tuple[str, ...] = ()
    can_reach: str | None = None
    public_ip: str | None = None
    public_ipv6: str | None = None

    @classmethod
    def of(cls, iface: str | Sequence[str] | None = None, regexes: Sequence[str] | None = None,
           can_reach: str | None = None, public_ip: str | None = None,
           public_ipv6: str | None = None) -> UnderlayChoice:
        """From module options or flags: one iface or several, empty values dropped."""
        ifaces = [iface] if isinstance(iface, str) else list(iface or [])
        return cls(tuple(i for i in ifaces if i), tuple(r for r in regexes or [] if r), can_reach or None,
                   public_ip or None, public_ipv6 or None)

    @property
    def explicit(self) -> bool:
        return bool(self.ifaces or self.regexes or self.can_reach)


@dataclass(frozen=True)
class _Checked:
    choice: UnderlayChoice
    patterns: tuple[re.Pattern[str], ...]


def check_choice(choice: UnderlayChoice) -> None:
    """Raise HostNetworkError when a value cannot mean anything (bad address, bad regex,
    impossible interface name), before any netlink is read."""
    _checked(choice)


def _checked(choice: UnderlayChoice) -> _Checked:
    for text in choice.ifaces:
        if _ip(text) is None and (len(text) > IFNAMSIZ or any(c in text for c in "/: \t\n") or text in (".", "..")):
            raise HostNetworkError(f"iface {shown(text)} is neither an IP address nor an interface name "
                                   f"(at most {IFNAMSIZ} characters, no '/', ':' or spaces)")
    patterns = []
    for text in choice.regexes:
        try:
            patterns.append(re.compile(text))
        except (re.error, RecursionError, OverflowError) as exc:
            raise HostNetworkError(f"iface-regex {shown(text)} is not a valid regular expression: {exc}") from None
    _require(choice.can_reach, "iface-can-reach", (4, 6))
    _require(choice.public_ip, "public-ip", (4,))
    _require(choice.public_ipv6, "public-ipv6", (6,))
    return _Checked(choice, tuple(patterns))


def _require(text: str | None, what: str, versions: tuple[int, ...]) -> None:
    if text is None:
        return
    parsed = _ip(text)
    if parsed is None or parsed.version not in versions:
        kind = f"an IPv{versions[0]} address" if len(versions) == 1 else "an IP address"
        raise HostNetworkError(f"{what} {shown(text)} is not {kind}, such as "
                               f"{'fd00::11' if versions == (6,) else '192.168.1.11'}")


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def find_underlay(iface: str | Sequence[str] | None = None, public_ip: str | None = None) -> Underlay:
    """The underlay for an iface (name or address; several: the first that exists) and a public IP."""
    return select_underlay(UnderlayChoice.of(iface, public_ip=public_ip))


def select_underlay(choice: UnderlayChoice, netns: str | None = None) -> Underlay:
    """The interface and addresses *choice* picks on this host (or in network namespace *netns*)."""
    checked = _checked(choice)
    with open_ipr(netns) as ipr:
        interfaces = read_interfaces(ipr)
        picked = _explicit(ipr, interfaces, checked) if choice.explicit else _implicit(ipr, interfaces, choice)
    iface, address = picked
    return Underlay(iface.name, iface.index, iface.mtu, choice.public_ip or address, address, choice.public_ipv6)


class _NoMatch(Exception):
    """One way of choosing found nothing; str() says why."""


_Pick = tuple[Interface, str]


def _explicit(ipr: IPRouteAPI, interfaces: list[Interface], checked: _Checked) -> _Pick:
    choice = checked.choice
    reasons = []
    for text in choice.ifaces:
        try:
            return _by_name_or_address(interfaces, text)
        except _NoMatch as exc:
            reasons.append(f"iface {shown(text)}: {exc}")
    for text, pattern in zip(choice.regexes, checked.patterns, strict=True):
        try:
            return _by_regex(interfaces, pattern)
        except _NoMatch as exc:
            reasons.append(f"iface-regex {shown(text)}: {exc}")
    if choice.can_reach:
        try:
            return _by_route(ipr, interfaces, choice.can_reach)
        except (_NoMatch, HostNetworkError) as exc:
            reasons.append(f"iface-can-reach {choice.can_reach}: {exc}")
    raise HostNetworkError(f"no interface matches what was asked ({'; '.join(reasons)}); "
                           f"this host has {describe(interfaces)}")


def _implicit(ipr: IPRouteAPI, interfaces: list[Interface], choice: UnderlayChoice) -> _Pick:
    iface, how = None, "of the default route"
    for address in (choice.public_ip, choice.public_ipv6):
        if address and iface is None:
            iface, how = _holding(interfaces, address), f"holding {address}"
    if iface is None:  # no public IP, or one no interface holds (behind NAT)
        iface, how = _by_index(interfaces, _default_route_index(ipr)), "of the default route"
    try:
        return _address_on(iface, choice.public_ip)
    except _NoMatch:
        raise HostNetworkError(f"interface {iface.name} ({how}) has no IPv4 address; set iface; "
                               f"this host has {describe(interfaces)}") from None


def _by_name_or_address(interfaces: list[Interface], text: str) -> _Pick:
    if _ip(text) is not None:
        holder = _holding(interfaces, text)
        if holder is None:
            raise _NoMatch("no interface has this address")
        return _address_on(holder, text)
    for iface in interfaces:
        if iface.name == text:
            return iface, _first_ipv4(iface)
    raise _NoMatch("no such interface")


def _by_regex(interfaces: list[Interface], pattern: re.Pattern[str]) -> _Pick:
    for iface in interfaces:
        for address in iface.ipv4:
            if pattern.search(address):
                return iface, address
    for iface in interfaces:
        if pattern.search(iface.name):
            return iface, _first_ipv4(iface)
    raise _NoMatch("matches no interface name or IPv4 address")


def _by_route(ipr: IPRouteAPI, interfaces: list[Interface], address: str) -> _Pick:
    index, source = route_to(ipr, address)
    iface = _by_index(interfaces, index)
    return _address_on(iface, source)


def _holding(interfaces: list[Interface], address: str) -> Interface | None:
    wanted = ipaddress.ip_address(address)
    for iface in interfaces:
        if any(ipaddress.ip_address(a) == wanted for a in iface.ipv4 + iface.ipv6):
            return iface
    return None


def _address_on(iface: Interface, preferred: str | None) -> _Pick:
    """*iface* with *preferred* when it is one of its IPv4 addresses, else its first one."""
    return iface, preferred if preferred in iface.ipv4 else _first_ipv4(iface)


def _first_ipv4(iface: Interface) -> str:
    if not iface.ipv4:
        raise _NoMatch(f"interface {iface.name} has no IPv4 address")
    return iface.ipv4[0]


def _by_index(interfaces: list[Interface], index: int) -> Interface:
    for iface in interfaces:
        if iface.index == index:
            return iface
    raise HostNetworkError(f"interface #{index} vanished while the underlay was chosen; try again")


def _default_route_index(ipr: IPRouteAPI) -> int:
    for route in ipr.get_default_routes(family=2):
        oif = route.get("oif")
        if oif:
            return int(oif)
        for hop in route.get("multipath") or []:
            if hop.get("oif"):
                return int(hop["oif"])
    raise HostNetworkError("this host has no IPv4 default route; set iface (or public_ip) explicitly")
