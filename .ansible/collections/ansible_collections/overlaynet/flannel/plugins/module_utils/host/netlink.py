"""Thin, idempotent helpers over pyroute2 for the backends.

Every write is idempotent: the "already so" answer of each kernel call is swallowed
precisely (EEXIST on add; ENOENT/ESRCH/EADDRNOTAVAIL/ENODEV on delete, depending on the
object) and every other netlink error becomes a HostNetworkError naming the object.
Writes that would only repeat the current state are skipped (callers compare with a dump
first), so a periodic reconcile neither churns the kernel nor floods netlink listeners.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from ..deps import MISSING, netaddr, pyroute2
from ..errors import HostNetworkError

# Without pyroute2, open_ipr() raises a clear error; nothing else runs without an IPRoute.
NetlinkError: type[Exception] = pyroute2.NetlinkError if pyroute2 is not None else OSError
DumpInterrupted: type[Exception] = pyroute2.NetlinkDumpInterrupted if pyroute2 is not None else OSError

# Routes we program carry this protocol number, so stale ones can be found and removed
# without touching anybody else's routes. Not in the kernel's or iproute2's list of
# reserved numbers (rtnetlink.h, /etc/iproute2/rt_protos); 70 is "F" (flannel).
RTPROT_OVERLAYNET = 70
MAIN_TABLE = 254
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
RTNH_F_ONLINK = 0x04
IFF_UP = 0x1
RTN_UNICAST = 1


class NetlinkMessage(Protocol):
    """A pyroute2 message (link, address, route, neighbour, FDB entry): header fields by
    name, attributes by get("name") or get(("NESTED", "NAME"))."""

    def get(self, key: Any, default: Any = None) -> Any: ...

    def __getitem__(self, key: str) -> Any: ...


class IPRouteAPI(Protocol):
    """What the engine uses of pyroute2.IPRoute (pyroute2 ships no type information)."""

    def link_lookup(self, **match: Any) -> list[int]: ...

    def get_links(self, *indexes: int) -> list[NetlinkMessage]: ...

    def get_addr(self, **match: Any) -> list[NetlinkMessage]: ...

    def get_default_routes(self, family: int = ...) -> Iterable[NetlinkMessage]: ...

    def link(self, command: str, **spec: Any) -> Any: ...

    def addr(self, command: str, **spec: Any) -> Any: ...

    def route(self, command: str, **spec: Any) -> Iterable[NetlinkMessage]: ...

    def neigh(self, command: str, **spec: Any) -> Iterable[NetlinkMessage]: ...

    def fdb(self, command: str, **spec: Any) -> Iterable[NetlinkMessage]: ...

    def close(self) -> None: ...


@contextmanager
def open_ipr(netns: str | None = None) -> Iterator[IPRouteAPI]:
    """An IPRoute in the named netns (never created here), or in the current one."""
    if pyroute2 is None:
        raise HostNetworkError(f"the pyroute2 package is missing ({MISSING['pyroute2']}); pip install pyroute2")
    try:
        # flags=0: pyroute2 would otherwise create a missing netns (O_CREAT is its default).
        ipr = pyroute2.IPRoute() if netns is None else pyroute2.IPRoute(netns=netns, flags=0)
    except OSError as exc:
        where = f"network namespace {netns!r}" if netns else "the current network namespace"
        raise HostNetworkError(f"cannot open netlink in {where}: {exc}") from None
    try:
        yield ipr
    finally:
        ipr.close()


def call(what: str, func: Callable[..., Any], *args: Any, ok: tuple[int, ...] = (), **kwargs: Any) -> bool:
    """Run one netlink request; False when it failed with an errno in `ok` (already so)."""
    try:
        func(*args, **kwargs)
    except NetlinkError as exc:
        code = getattr(exc, "code", None) or getattr(exc, "errno", None) or 0
        if code in ok:
            return False
        raise HostNetworkError(f"{what} failed: {_describe(code)}") from None
    return True


def dump(what: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Any]:
    """Run a read request; retried when the kernel reports the dump was interrupted by a
    concurrent change (NLM_F_DUMP_INTR), which is routine on a busy host."""
    attempts = 5
    for attempt in range(1, attempts + 1):
        try:
            return list(func(*args, **kwargs))
        except NetlinkError as exc:
            if not isinstance(exc, DumpInterrupted):
                raise HostNetworkError(f"reading {what} failed: {_describe(getattr(exc, 'code', 0) or 0)}") from None
            if attempt == attempts:
                raise HostNetworkError(f"reading {what} failed: interrupted {attempts} times by changes") from None
    return []  # not reached


def _describe(code: int) -> str:
    return f"{os.strerror(code)} ({errno.errorcode.get(code, str(code))})"


# ---- links -----------------------------------------------------------------------------

def link_index(ipr: IPRouteAPI, name: str) -> int | None:
    found = dump(f"link {name}", ipr.link_lookup, ifname=name)
    return int(found[0]) if found else None


def get_link(ipr: IPRouteAPI, index: int) -> NetlinkMessage | None:
    """The link message, or None when the index is gone."""
    try:
        return ipr.get_links(index)[0]
    except NetlinkError as exc:
        if getattr(exc, "code", None) == errno.ENODEV:
            return None
        raise HostNetworkError(f"reading link {index} failed: {_describe(getattr(exc, 'code', 0))}") from None


def link_kind(link: NetlinkMessage) -> str:
    return link.get(("IFLA_LINKINFO", "IFLA_INFO_KIND")) or ""


def link_info_data(link: NetlinkMessage) -> Any:
    """IFLA_INFO_DATA of a link (e.g. the IFLA_VXLAN_* attributes), or None."""
    return link.get(("IFLA_LINKINFO", "IFLA_INFO_DATA"))


def delete_link(ipr: IPRouteAPI, index: int, name: str) -> bool:
    return call(f"deleting device {name}", ipr.link, "del", index=index, ok=(errno.ENODEV,))


def ensure_link_up(ipr: IPRouteAPI, link: NetlinkMessage) -> bool:
    if link["flags"] & IFF_UP:
        return False
    call(f"bringing {link.get('ifname')} up", ipr.link, "set", index=link["index"], state="up")
    return True


def ensure_link_attrs(ipr: IPRouteAPI, link: NetlinkMessage, mtu: int | None = None,
                      address: str | None = None) -> bool:
    """Set MTU / MAC address where they differ."""
    changes: dict[str, Any] = {}
    if mtu is not None and int(link.get("mtu") or 0) != mtu:
        changes["mtu"] = mtu
    if address is not None and (link.get("address") or "").lower() != address.lower():
        changes["address"] = address
    if changes:
        call(f"setting {changes} on {link.get('ifname')}", ipr.link, "set", index=link["index"], **changes)
    return bool(changes)


# ---- addresses -------------------------------------------------------------------------

def ipv4_addresses(ipr: IPRouteAPI, index: int) -> list[netaddr.IPNetwork]:
    return [netaddr.IPNetwork(f"{a.get('address')}/{a['prefixlen']}")
            for a in dump("addresses", ipr.get_addr, family=socket.AF_INET, index=index)]


def ensure_only_ipv4_address(ipr: IPRouteAPI, index: int, name: str, address: netaddr.IPNetwork) -> bool:
    """Make `address` (ip/prefixlen) the device's only IPv4 address, as flannel does."""
    changed = False
    current = ipv4_addresses(ipr, index)
    for addr in current:
        if (addr.ip, addr.prefixlen) != (address.ip, address.prefixlen):
            changed |= call(f"removing {addr} from {name}", ipr.addr, "del", index=index,
                            address=str(addr.ip), prefixlen=addr.prefixlen, ok=(errno.EADDRNOTAVAIL,))
    if not any((a.ip, a.prefixlen) == (address.ip, address.prefixlen) for a in current):
        changed |= call(f"adding {address} to {name}", ipr.addr, "add", index=index,
                        address=str(address.ip), prefixlen=address.prefixlen, ok=(errno.EEXIST,))
    return changed


def directly_connected(ipr: IPRouteAPI, ip: str, index: int, networks: list[netaddr.IPNetwork] | None = None) -> bool:
    """Whether `ip` is on a link of interface `index`: inside one of its address prefixes,
    or (failing that) the kernel routes to it without a gateway through that interface."""
    nets = ipv4_addresses(ipr, index) if networks is None else networks
    target = netaddr.IPAddress(ip)
    if any(target in net.cidr for net in nets):
        return True
    try:
        found = ipr.route("get", dst=ip)
    except NetlinkError:
        return False  # no route at all (ENETUNREACH): certainly not adjacent
    return any(r.get("oif") == index and not r.get("gateway") and r["type"] == RTN_UNICAST for r in found)


# ---- routes ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Route:
    """An IPv4 unicast route in the main table, as far as the backends care."""

    dst: netaddr.IPNetwork
    gateway: str | None
    oif: int | None
    onlink: bool = False
    proto: int = RTPROT_OVERLAYNET

    def same_path(self, other: Route) -> bool:
        return (self.gateway, self.oif, self.onlink, self.proto) == (
            other.gateway, other.oif, other.onlink, other.proto)


def main_routes(ipr: IPRouteAPI) -> dict[netaddr.IPNetwork, Route]:
    """IPv4 unicast routes of the main table with metric 0, by destination (the ones a
    `replace` of ours would hit; routes with other metrics are left to their owners)."""
    routes: dict[netaddr.IPNetwork, Route] = {}
    for msg in dump("routes", ipr.route, "dump", family=socket.AF_INET):
        # get() prefers RTA_TABLE (the real table id) over the 8-bit header field.
        if msg.get("table") != MAIN_TABLE or msg["type"] != RTN_UNICAST or msg["tos"] or msg.get("priority"):
            continue
        dst = netaddr.IPNetwork(f"{msg.get('dst') or '0.0.0.0'}/{msg['dst_len']}")
        routes.setdefault(dst, Route(dst, msg.get("gateway"), msg.get("oif"),
                                     bool(msg["flags"] & RTNH_F_ONLINK), msg["proto"]))
    return routes


def ensure_route(ipr: IPRouteAPI, want: Route, current: dict[netaddr.IPNetwork, Route] | None = None) -> bool:
    """Make `want` the main table's route to want.dst (replacing another one to the same dst,
    e.g. one left by upstream flanneld, as flanneld's RouteReplace does)."""
    have = (main_routes(ipr) if current is None else current).get(want.dst)
    if have is not None and have.same_path(want):
        return False
    spec: dict[str, Any] = {"dst": str(want.dst), "table": MAIN_TABLE, "proto": want.proto}
    if want.gateway:
        spec["gateway"] = want.gateway
    if want.oif:
        spec["oif"] = want.oif
    if want.onlink:
        spec["flags"] = RTNH_F_ONLINK
    via = f" via {want.gateway}" if want.gateway else ""
    call(f"route {want.dst}{via} dev index {want.oif}", ipr.route, "replace", **spec)
    return True


def delete_route(ipr: IPRouteAPI, dst: netaddr.IPNetwork, proto: int = RTPROT_OVERLAYNET) -> bool:
    """Delete our route to dst; routes with another protocol are not touched (the kernel
    matches the protocol when it is given)."""
    return call(f"deleting route {dst}", ipr.route, "del", dst=str(dst), table=MAIN_TABLE, proto=proto,
                ok=(errno.ESRCH, errno.ENOENT))


# ---- neighbours (ARP) --------------------------------------------------------------------

def permanent_neighbours(ipr: IPRouteAPI, index: int) -> dict[str, str]:
    """Permanent IPv4 neighbours on a device: ip -> lladdr."""
    return {n.get("dst"): (n.get("lladdr") or "").lower()
            for n in dump("neighbours", ipr.neigh, "dump", family=socket.AF_INET)
            if n["ifindex"] == index and n["state"] & NUD_PERMANENT and n.get("dst")}


def ensure_neighbour(ipr: IPRouteAPI, index: int, ip: str, lladdr: str, current: dict[str, str] | None = None) -> bool:
    have = (permanent_neighbours(ipr, index) if current is None else current).get(ip)
    if have == lladdr.lower():
        return False
    call(f"neighbour {ip} lladdr {lladdr}", ipr.neigh, "replace", ifindex=index, dst=ip, lladdr=lladdr,
         state=NUD_PERMANENT)
    return True


def delete_neighbour(ipr: IPRouteAPI, index: int, ip: str) -> bool:
    return call(f"deleting neighbour {ip}", ipr.neigh, "del", ifindex=index, dst=ip, ok=(errno.ENOENT,))


# ---- FDB (vxlan remote per MAC) ----------------------------------------------------------

def fdb_remotes(ipr: IPRouteAPI, index: int) -> dict[str, set[str]]:
    """A vxlan device's FDB entries with a remote: mac -> remote IPs."""
    found: dict[str, set[str]] = {}
    for entry in dump("FDB", ipr.fdb, "dump", ifindex=index):
        if entry["ifindex"] == index and entry.get("dst") and entry.get("lladdr"):
            found.setdefault(entry.get("lladdr").lower(), set()).add(entry.get("dst"))
    return found


def ensure_fdb(ipr: IPRouteAPI, index: int, lladdr: str, dst: str, current: dict[str, set[str]] | None = None) -> bool:
    """Exactly one remote `dst` for `lladdr` (flanneld: NeighSet, NTF_SELF, permanent)."""
    mac = lladdr.lower()
    have = (fdb_remotes(ipr, index) if current is None else current).get(mac, set())
    if have == {dst}:
        return False
    if dst not in have:
        # replace rewrites the first remote of an existing MAC, or creates the entry.
        call(f"FDB {mac} dst {dst}", ipr.fdb, "replace", ifindex=index, lladdr=mac, dst=dst,
             state=NUD_PERMANENT, flags=NTF_SELF)
    for other in have - {dst}:
        delete_fdb(ipr, index, mac, other)
    return True


def delete_fdb(ipr: IPRouteAPI, index: int, lladdr: str, dst: str) -> bool:
    return call(f"deleting FDB {lladdr} dst {dst}", ipr.fdb, "del", ifindex=index, lladdr=lladdr, dst=dst,
                ok=(errno.ENOENT,))
