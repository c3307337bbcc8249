"""The udp forwarder's peer table: destination -> peer by longest prefix, and the sources
datagrams are accepted from. Immutable: the packet threads read a snapshot without a lock."""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from typing import NamedTuple

from .mmsg import addr_key, sockaddr


class PeerRoute(NamedTuple):
    """Where packets for one remote subnet go, and in which format."""

    network: int  # subnet address as an integer
    prefixlen: int
    public_ip: str
    port: int
    fast: bool  # the peer advertised the GSO fast path


class PeerEntry:
    __slots__ = ("ip", "fast", "sa", "name_ptr")

    def __init__(self, route: PeerRoute) -> None:
        self.ip = route.public_ip
        self.fast = route.fast
        self.sa = sockaddr(route.public_ip, route.port)
        self.name_ptr = ctypes.addressof(self.sa)


class RouteTable:
    """Immutable: destination -> peer by longest prefix, and the set of allowed sources.

    Built from `previous` (the table it replaces), the entries of unchanged routes are
    taken over rather than made again: one peer more at 5,000 costs a dict pass, not 5,000
    sockaddr structures."""

    def __init__(self, routes: Iterable[PeerRoute] = (), previous: RouteTable | None = None) -> None:
        by_len: dict[int, dict[int, PeerEntry]] = {}
        self.routes = tuple(sorted(set(routes)))
        old = previous.entries if previous is not None else {}
        self.entries: dict[PeerRoute, PeerEntry] = {}
        for route in self.routes:
            mask = (0xFFFFFFFF << (32 - route.prefixlen)) & 0xFFFFFFFF
            entry = self.entries[route] = old.get(route) or PeerEntry(route)
            by_len.setdefault(route.prefixlen, {})[route.network & mask] = entry
        self.tables = tuple(((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF, by_len[plen])
                            for plen in sorted(by_len, reverse=True))
        self.allowed = frozenset(addr_key(r.public_ip) for r in self.routes)

    def lookup(self, dst: int) -> PeerEntry | None:
        for mask, table in self.tables:
            entry = table.get(dst & mask)
            if entry is not None:
                return entry
        return None
