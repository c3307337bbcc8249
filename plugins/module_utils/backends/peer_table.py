"""What the peers need in the kernel (a route each, and for vxlan a neighbour and an FDB
entry), diffed against one dump of each table and written as one batch of requests.

The cost of a round is one dump per table plus one request per difference, whatever the
number of peers: nothing is queried per peer, and a round that finds nothing to change
writes nothing (netlink listeners see no churn).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..host import rtnl
from ..host.rtnl import Request, RouteSpec

OURS = 70  # netlink.RTPROT_OVERLAYNET: the protocol of every route we program


@dataclass(frozen=True)
class PeerPlan:
    """What one remote lease needs on this host."""

    route: RouteSpec
    neigh: tuple[str, str] | None = None  # (remote .0, VtepMAC); None for a direct route
    fdb: tuple[str, str] | None = None  # (VtepMAC, PublicIP)


@dataclass
class Tables:
    """The kernel's routes (main table), and a device's permanent neighbours and FDB remotes."""

    routes: dict[str, RouteSpec]
    neighbours: dict[str, str] = field(default_factory=dict)
    remotes: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def read(cls, rt: rtnl.Rtnl, index: int | None) -> Tables:
        """One dump each; without a device index only the routes."""
        if index is None:
            return cls(rt.routes())
        return cls(rt.routes(), rt.neighbours(index), rt.fdb(index))


class Batch:
    """The requests that bring the tables to the plans given, in a safe order: neighbours
    and FDB entries before the routes that need them (the kernel never ARPs for .0), route
    deletions before the neighbour/FDB deletions."""

    def __init__(self, tables: Tables, index: int | None) -> None:
        self.tables = tables
        self.index = index
        self._l2: list[Request] = []
        self._routes: list[Request] = []
        self._route_dels: list[Request] = []
        self._l2_dels: list[Request] = []

    @property
    def requests(self) -> list[Request]:
        return self._l2 + self._routes + self._route_dels + self._l2_dels

    def program(self, plan: PeerPlan, label: Callable[[], str]) -> None:
        """Whatever of `plan` differs from the tables; errors will name label() (the peer,
        only made for a request: a round that finds everything in place makes none)."""
        tables, index = self.tables, self.index
        if plan.neigh and index is not None and tables.neighbours.get(plan.neigh[0]) != plan.neigh[1]:
            self._l2.append(_named(rtnl.neighbour_replace(index, *plan.neigh), label()))
        if plan.fdb and index is not None and tables.remotes.get(plan.fdb[0]) != {plan.fdb[1]}:
            self._fdb(index, plan.fdb, label())
        if tables.routes.get(plan.route.dst) != plan.route:
            self._routes.append(_named(rtnl.route_replace(plan.route), label()))

    def _fdb(self, index: int, fdb: tuple[str, str], label: str) -> None:
        """Exactly one remote for the MAC (replace rewrites the first one, or creates it)."""
        mac, dst = fdb
        have = self.tables.remotes.get(mac, set())
        if have == {dst}:
            return
        if dst not in have:
            self._l2.append(_named(rtnl.fdb_replace(index, mac, dst), label))
        self._l2_dels.extend(_named(rtnl.fdb_delete(index, mac, other), label) for other in sorted(have - {dst}))

    def delete_route(self, dst: str) -> None:
        if dst in self.tables.routes:
            self._route_dels.append(rtnl.route_delete(dst, OURS))

    def delete_neighbour(self, ip: str) -> None:
        if self.index is not None and ip in self.tables.neighbours:
            self._l2_dels.append(rtnl.neighbour_delete(self.index, ip))

    def delete_fdb(self, mac: str, dst: str) -> None:
        if self.index is not None and dst in self.tables.remotes.get(mac, ()):
            self._l2_dels.append(rtnl.fdb_delete(self.index, mac, dst))

    def remove_stale(self, plans: Iterable[PeerPlan]) -> None:
        """Every route of ours (by protocol, wherever it points), neighbour and FDB entry that
        none of `plans` needs: one a hostile or mistaken lease once got must not outlive it."""
        want_routes, want_ips, want_fdb = _wanted(plans)
        for dst, route in self.tables.routes.items():
            if route.proto == OURS and dst not in want_routes:
                self.delete_route(dst)
        for ip in self.tables.neighbours:
            if ip not in want_ips:
                self.delete_neighbour(ip)
        for mac, dsts in self.tables.remotes.items():
            for dst in sorted(dsts):
                if (mac, dst) not in want_fdb:
                    self.delete_fdb(mac, dst)


def _wanted(plans: Iterable[PeerPlan]) -> tuple[set[str], set[str], set[tuple[str, str]]]:
    """The route destinations, neighbour IPs and (MAC, remote) FDB entries of the plans."""
    routes: set[str] = set()
    ips: set[str] = set()
    fdb: set[tuple[str, str]] = set()
    for plan in plans:
        routes.add(plan.route.dst)
        if plan.neigh:
            ips.add(plan.neigh[0])
        if plan.fdb:
            fdb.add(plan.fdb)
    return routes, ips, fdb


def _named(request: Request, label: str) -> Request:
    return request._replace(what=f"{label}: {request.what}")
