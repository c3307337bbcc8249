"""Peer validation: which leases may reach the data plane, and the older of two rivals wins."""

from __future__ import annotations

import netaddr
import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.agent.peers import PeerCache
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.registry import SubnetEvent
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.config import NetworkConfig
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.lease import Lease, LeaseAttrs
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.peer_rules import PeerRules

CONFIG = NetworkConfig.from_dict({"Network": "10.5.0.0/16", "SubnetMin": "10.5.10.0", "SubnetMax": "10.5.200.0",
                                  "Backend": {"Type": "vxlan"}})
OWN_SUBNET, OWN_IP = netaddr.IPNetwork("10.5.1.0/24"), "192.168.81.11"
RULES = PeerRules(CONFIG, OWN_SUBNET, OWN_IP, "vxlan")


def peer(subnet: str = "10.5.20.0/24", ip: str = "192.168.81.12", mac: object = "0e:00:00:00:00:02",
         vni: object = 1, btype: str = "vxlan", created: int = 10, lease_id: int = 7,
         data: dict | None = None) -> Lease:
    backend_data = data if data is not None else {"VNI": vni, "VtepMAC": mac}
    return Lease(netaddr.IPNetwork(subnet), LeaseAttrs(ip, None, btype, backend_data), lease_id, created,
                 create_revision=created)


def test_a_well_formed_peer_is_accepted():
    assert RULES.check(peer()) is None


@pytest.mark.parametrize(("lease", "reason"), [
    (peer("0.0.0.0/0"), "outside the network"),  # key 0.0.0.0-0: the default route
    (peer("192.168.0.0/16"), "outside the network"),
    (peer("10.5.1.128/25"), "is not a /24"),  # half of our own containers
    (peer("10.5.0.0/16"), "is not a /24"),  # the whole network
    (peer("10.5.1.0/24", ip="192.168.81.12"), "overlaps this host's own"),
    (peer(ip="0.0.0.0"), "not a unicast address"),
    (peer(ip="127.0.0.1"), "not a unicast address"),
    (peer(ip="169.254.3.4"), "not a unicast address"),
    (peer(ip="224.0.0.5"), "not a unicast address"),
    (peer(ip="240.1.2.3"), "not a unicast address"),
    (peer(ip="255.255.255.255"), "not a unicast address"),
    (peer(ip=OWN_IP), "this host's own"),
    (peer(ip="10.5.30.1"), "inside the overlay network"),
    (peer(mac="00:00:00:00:00:00"), "not a unicast MAC"),  # would become the flood entry
    (peer(mac="01:00:5e:00:00:01"), "not a unicast MAC"),
    (peer(mac="not-a-mac"), "no VtepMAC"),
    (peer(data={"VNI": 1}), "no VtepMAC"),
    (peer(vni=2), "not this network's VNI 1"),
    (peer(vni=True), "not this network's VNI 1"),
    (peer(btype="host-gw", data={}), "host-gw lease and this host runs vxlan"),
], ids=lambda value: value if isinstance(value, str) else value.key)
def test_hostile_or_broken_leases_are_rejected_with_the_reason(lease, reason):
    assert reason in (RULES.check(lease) or "")


def test_reservations_and_leases_outside_subnet_min_max_stay_valid_peers():
    assert RULES.check(peer("10.5.250.0/24", lease_id=0)) is None  # above SubnetMax, a reservation
    assert RULES.check(peer("10.5.2.0/24")) is None  # below SubnetMin


def test_of_two_peers_with_one_vtep_mac_the_older_wins():
    older, newer = peer("10.5.20.0/24", created=10), peer("10.5.30.0/24", ip="192.168.81.13", created=20)
    selection = RULES.select([newer, older])
    assert list(selection.accepted) == [older.key]
    assert "the older lease 10.5.20.0-24 has the same VtepMAC 0e:00:00:00:00:02" in selection.rejected[newer.key]


def test_our_own_lease_is_neither_a_peer_nor_rejected():
    own = Lease(OWN_SUBNET, LeaseAttrs(OWN_IP, None, "vxlan", {"VNI": 1, "VtepMAC": "0e:00:00:00:00:01"}))
    selection = RULES.select([own])
    assert selection.accepted == {} and selection.rejected == {}


def test_when_the_older_rival_goes_the_newer_is_programmed():
    cache = PeerCache(RULES.select)
    older, newer = peer("10.5.20.0/24", created=10), peer("10.5.30.0/24", ip="192.168.81.13", created=20)
    changes = cache.resync([older, newer])
    assert [(c.kind, c.lease.key) for c in changes] == [("add", older.key)]
    assert newer.key in cache.rejected
    changes = cache.apply(SubnetEvent("delete", older.key, None, 30))
    assert [(c.kind, c.lease.key) for c in changes] == [("remove", older.key), ("add", newer.key)]
    assert cache.rejected == {}


def test_a_peer_rewritten_into_a_hostile_value_is_taken_out():
    cache = PeerCache(RULES.select)
    good = peer()
    cache.resync([good])
    hostile = peer(mac="00:00:00:00:00:00", created=good.create_revision)
    changes = cache.apply(SubnetEvent("put", good.key, hostile, 40))
    assert [(c.kind, c.lease.key) for c in changes] == [("remove", good.key)]
    assert "not a unicast MAC" in cache.rejected[good.key]


def test_a_peer_claiming_this_hosts_own_vtep_mac_is_rejected():
    """The older-wins rule cannot see our own lease (it is no peer): our claims are seeded."""
    ours = {"VNI": 1, "VtepMAC": "0e:00:00:00:00:01"}
    rules = PeerRules(CONFIG, OWN_SUBNET, OWN_IP, "vxlan", ours)
    copy = peer(mac="0E:00:00:00:00:01")
    assert "this host's own VtepMAC 0e:00:00:00:00:01" in (rules.check(copy) or "")
    assert rules.select([copy]).accepted == {}
    assert RULES.check(copy) is None  # without our data known, nothing to compare with


def test_cached_rules_are_rebuilt_only_when_an_input_changes():
    first = PeerRules.cached(None, CONFIG, OWN_SUBNET, OWN_IP, "vxlan")
    assert PeerRules.cached(first, CONFIG, OWN_SUBNET, OWN_IP, "vxlan") is first
    moved = PeerRules.cached(first, CONFIG, netaddr.IPNetwork("10.5.2.0/24"), OWN_IP, "vxlan")
    assert moved is not first and moved.check(peer("10.5.2.0/24")) is not None
    assert moved.check(peer("10.5.1.0/24")) is None  # the old own subnet is a peer's now


class CountingRules(PeerRules):
    """PeerRules that count how often a lease is judged alone."""

    checked = 0

    def check(self, lease: Lease) -> str | None:
        self.checked += 1
        return super().check(lease)


def test_a_lease_is_judged_once_while_the_same_lease_comes_again():
    rules = CountingRules(CONFIG, OWN_SUBNET, OWN_IP, "vxlan")
    leases = [peer(f"10.5.{n}.0/24", ip=f"192.168.81.{n}", mac=f"0e:00:00:00:00:{n:02x}", created=n)
              for n in range(20, 30)]
    first = rules.select(leases)
    assert rules.checked == 10
    again = rules.select(leases)
    assert rules.checked == 10
    assert again == first
    changed = peer("10.5.20.0/24", ip="192.168.81.20", mac="0e:00:00:00:00:1d", created=20)  # 29's MAC, older
    third = rules.select([changed, *leases[1:]])
    assert rules.checked == 11  # only the new lease object
    assert "10.5.20.0-24" in third.accepted and "10.5.29.0-24" in third.rejected
