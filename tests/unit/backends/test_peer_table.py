"""The diff of wanted peer objects against dumped tables: only differences are written,
in a safe order, and only our own stale routes are removed."""

from __future__ import annotations

from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.peer_table import Batch, PeerPlan, Tables
from ansible_collections.overlaynet.flannel.plugins.module_utils.host import rtnl
from ansible_collections.overlaynet.flannel.plugins.module_utils.host.rtnl import RouteSpec

DEV = 7
MAC, MAC2 = "0e:00:00:00:00:02", "0e:00:00:00:00:03"


def plan(n: int, mac: str = MAC, remote: str = "192.168.81.12") -> PeerPlan:
    gw = f"10.5.{n}.0"
    return PeerPlan(RouteSpec(f"{gw}/24", gw, DEV, onlink=True), (gw, mac), (mac, remote))


def programmed(*plans: PeerPlan) -> Tables:
    return Tables({p.route.dst: p.route for p in plans}, {p.neigh[0]: p.neigh[1] for p in plans if p.neigh},
                  {p.fdb[0]: {p.fdb[1]} for p in plans if p.fdb})


def kinds(batch: Batch) -> list[tuple[int, str]]:
    return [(r.kind, r.what) for r in batch.requests]


def test_nothing_is_written_when_the_tables_already_match():
    batch = Batch(programmed(plan(2), plan(3)), DEV)
    for p in (plan(2), plan(3)):
        batch.program(p, lambda: "peer")
    batch.remove_stale([plan(2), plan(3)])
    assert batch.requests == []


def test_a_new_peer_gets_neighbour_and_fdb_before_its_route():
    batch = Batch(Tables({}), DEV)
    batch.program(plan(2), lambda: "vxlan peer k")
    assert [kind for kind, _what in kinds(batch)] == [rtnl.RTM_NEWNEIGH, rtnl.RTM_NEWNEIGH, rtnl.RTM_NEWROUTE]
    assert all(what.startswith("vxlan peer k: ") for _kind, what in kinds(batch))


def test_a_changed_route_is_replaced_and_another_remote_of_the_mac_removed():
    old = plan(2, remote="192.168.81.99")
    tables = programmed(old)
    tables.routes[old.route.dst] = old.route._replace(proto=3)  # upstream's route to the same subnet
    tables.remotes[MAC].add("192.168.81.12")
    batch = Batch(tables, DEV)
    batch.program(plan(2), lambda: "peer")
    whats = [what for _kind, what in kinds(batch)]
    assert whats == ["peer: route 10.5.2.0/24 via 10.5.2.0 dev index 7",
                     "peer: deleting FDB 0e:00:00:00:00:02 dst 192.168.81.99"]


def test_stale_objects_go_but_routes_of_other_owners_stay():
    tables = programmed(plan(2), plan(3, MAC2))
    tables.routes["10.9.0.0/16"] = RouteSpec("10.9.0.0/16", "192.168.81.1", 2, proto=4)
    batch = Batch(tables, DEV)
    batch.remove_stale([plan(2)])
    assert kinds(batch) == [(rtnl.RTM_DELROUTE, "deleting route 10.5.3.0/24"),
                            (rtnl.RTM_DELNEIGH, "deleting neighbour 10.5.3.0"),
                            (rtnl.RTM_DELNEIGH, f"deleting FDB {MAC2} dst 192.168.81.12")]


def test_without_a_device_only_routes_are_touched():
    batch = Batch(Tables({}), None)
    batch.program(plan(2), lambda: "peer")
    batch.delete_neighbour("10.5.2.0")
    batch.delete_fdb(MAC, "192.168.81.12")
    assert [kind for kind, _what in kinds(batch)] == [rtnl.RTM_NEWROUTE]
