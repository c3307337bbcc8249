"""The peer cache: puts, deletes (which carry no value) and the diff after a compaction."""

from __future__ import annotations

from ansible_collections.overlaynet.flannel.plugins.module_utils.agent.peers import PeerCache, select_where
from ansible_collections.overlaynet.flannel.plugins.module_utils.deps import netaddr
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.registry import SubnetEvent
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.lease import Lease, LeaseAttrs

OWN_IP = "192.168.81.11"


def lease(subnet: str, ip: str, mac: str = "02:00:00:00:00:01", btype: str = "vxlan", lease_id: int = 7,
          rev: int = 1) -> Lease:
    data = {"VNI": 1, "VtepMAC": mac} if btype == "vxlan" else None
    return Lease(netaddr.IPNetwork(subnet), LeaseAttrs(ip, None, btype, data), lease_id, rev)


def cache() -> PeerCache:
    own_key = "10.5.1.0-24"
    return PeerCache(select_where(lambda item: item.key != own_key and item.attrs.public_ip != OWN_IP
                     and item.attrs.backend_type == "vxlan"))


def put(item: Lease, rev: int = 2) -> SubnetEvent:
    return SubnetEvent("put", item.key, item, rev)


def delete(key: str, rev: int = 3) -> SubnetEvent:
    return SubnetEvent("delete", key, None, rev)


def kinds(changes) -> list[tuple[str, str]]:
    return [(change.kind, change.lease.key) for change in changes]


def test_put_adds_then_delete_removes_the_cached_lease():
    peers = cache()
    peer = lease("10.5.2.0/24", "192.168.81.12")
    assert kinds(peers.apply(put(peer))) == [("add", "10.5.2.0-24")]
    assert peers.peers == {"10.5.2.0-24": peer}
    changes = peers.apply(delete("10.5.2.0-24"))
    # The DELETE event had no value: the change carries the lease as it was cached.
    assert kinds(changes) == [("remove", "10.5.2.0-24")]
    assert changes[0].lease == peer
    assert peers.peers == {}


def test_delete_of_an_unknown_key_changes_nothing():
    assert cache().apply(delete("10.5.9.0-24")) == []


def test_same_data_again_is_no_change_but_keeps_the_newest_lease():
    peers = cache()
    peers.apply(put(lease("10.5.2.0/24", "192.168.81.12", lease_id=7, rev=2)))
    renewed = lease("10.5.2.0/24", "192.168.81.12", lease_id=8, rev=5)  # a new etcd lease, same data
    assert peers.apply(put(renewed, 5)) == []
    assert peers.peers["10.5.2.0-24"].etcd_lease_id == 8


def test_changed_data_is_an_update_with_the_old_lease():
    peers = cache()
    old = lease("10.5.2.0/24", "192.168.81.12", mac="02:00:00:00:00:01")
    new = lease("10.5.2.0/24", "192.168.81.12", mac="02:00:00:00:00:02")
    peers.apply(put(old))
    changes = peers.apply(put(new, 3))
    assert kinds(changes) == [("update", "10.5.2.0-24")]
    assert changes[0].old == old and changes[0].lease == new


def test_own_lease_other_backend_and_malformed_values_are_not_peers():
    peers = cache()
    assert peers.apply(put(lease("10.5.1.0/24", OWN_IP))) == []  # our own key
    assert peers.apply(put(lease("10.5.7.0/24", OWN_IP))) == []  # a stale second lease of ours
    assert peers.apply(put(lease("10.5.3.0/24", "192.168.81.13", btype="host-gw"))) == []
    assert peers.peers == {}
    # A peer whose lease turns malformed (or switches backend) is torn down.
    peers.apply(put(lease("10.5.4.0/24", "192.168.81.14")))
    assert kinds(peers.apply(SubnetEvent("put", "10.5.4.0-24", None, 9, error="bad json"))) == \
        [("remove", "10.5.4.0-24")]
    peers.apply(put(lease("10.5.4.0/24", "192.168.81.14")))
    assert kinds(peers.apply(put(lease("10.5.4.0/24", "192.168.81.14", btype="host-gw")))) == \
        [("remove", "10.5.4.0-24")]


def test_resync_after_compaction_adds_new_removes_vanished_updates_changed():
    peers = cache()
    kept = lease("10.5.2.0/24", "192.168.81.12")
    vanished = lease("10.5.3.0/24", "192.168.81.13")
    changed = lease("10.5.4.0/24", "192.168.81.14", mac="02:00:00:00:00:04")
    for item in (kept, vanished, changed):
        peers.apply(put(item))
    changed_now = lease("10.5.4.0/24", "192.168.81.14", mac="02:00:00:00:00:44")
    new = lease("10.5.5.0/24", "192.168.81.15")
    own = lease("10.5.1.0/24", OWN_IP)
    changes = peers.resync([own, kept, changed_now, new])
    assert sorted(kinds(changes)) == [("add", "10.5.5.0-24"), ("remove", "10.5.3.0-24"),
                                      ("update", "10.5.4.0-24")]
    removed = next(change for change in changes if change.kind == "remove")
    assert removed.lease == vanished
    assert set(peers.peers) == {"10.5.2.0-24", "10.5.4.0-24", "10.5.5.0-24"}
    assert peers.resync([own, kept, changed_now, new]) == []  # a second listing: nothing to do


def test_resync_from_empty_adds_everything():
    peers = cache()
    items = [lease(f"10.5.{i}.0/24", f"192.168.81.{20 + i}") for i in range(2, 6)]
    assert sorted(kinds(peers.resync(items))) == sorted(("add", item.key) for item in items)
