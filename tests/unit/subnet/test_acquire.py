"""acquire: flannel's choice of a lease (choose) and what keeping one takes (plan_keep), pure.

The same policy against a real etcd, races included: tests/integration/store/test_lease_store.py.
"""

from __future__ import annotations

import random
from dataclasses import replace

import netaddr
import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import (
    HostConflictError,
    LeaseError,
    NetworkFullError,
)
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.acquire import (
    AcquireRequest,
    Create,
    Keep,
    check_requested,
    choose,
    plan_keep,
)
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.allocator import free_subnets, pick_window
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.lease import (
    Lease,
    LeaseAttrs,
    Listing,
    Malformed,
)
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.range import subnet_range

N = netaddr.IPNetwork
RNG = subnet_range(4, "10.5.0.0/16", None, None, None, "")
OURS, THEIRS = "192.168.81.11", "192.168.81.12"
VXLAN = {"VNI": 1, "VtepMAC": "02:00:00:00:00:01"}


def lease(subnet: str, ip: str, lease_id: int = 7, data: dict | None = None, btype: str = "vxlan") -> Lease:
    return Lease(N(subnet), LeaseAttrs(ip, None, btype, data if data is not None else dict(VXLAN)), lease_id, 3)


def listing(leases: list[Lease], malformed: list[Malformed] | None = None) -> Listing:
    return Listing(leases, 100, malformed or [], "/coreos.com/network/subnets/")


def request(**kwargs) -> AcquireRequest:
    return AcquireRequest(LeaseAttrs(OURS, None, "vxlan", dict(VXLAN)), **kwargs)


def test_a_lease_holding_our_public_ip_is_kept():
    mine = lease("10.5.9.0/24", OURS)
    assert choose(listing([lease("10.5.1.0/24", THEIRS), mine]), request(), RNG) == Keep(mine)


def test_our_lease_outside_the_config_is_replaced_and_goes_once_the_new_one_exists():
    stranded = lease("10.9.3.0/24", OURS)  # another network: it no longer fits
    decision = choose(listing([stranded]), request(), RNG, random.Random(1))
    assert isinstance(decision, Create) and RNG.fits(decision.subnet)
    assert decision.moved_from == (stranded,)


def test_the_previous_subnet_is_taken_when_free_and_fitting():
    assert choose(listing([]), request(previous=N("10.5.77.0/24")), RNG) == Create(N("10.5.77.0/24"))


@pytest.mark.parametrize("previous", ["10.5.1.0/24", "10.9.77.0/24", "10.5.0.0/24", "10.5.77.0/25"],
                         ids=["held by a peer", "outside the network", "below SubnetMin", "other length"])
def test_an_unusable_previous_subnet_falls_back_to_a_random_free_pick(previous):
    taken = [lease("10.5.1.0/24", THEIRS)]
    decision = choose(listing(taken), request(previous=N(previous)), RNG, random.Random(5))
    assert isinstance(decision, Create) and decision.subnet != N(previous)
    assert RNG.fits(decision.subnet) and decision.subnet != N("10.5.1.0/24")


def test_the_random_pick_is_among_the_first_hundred_free_subnets():
    taken = [lease(f"10.5.{i}.0/24", f"192.168.82.{i}") for i in range(1, 51)]
    picks = {choose(listing(taken), request(), RNG, random.Random(seed)).subnet for seed in range(200)}
    assert picks <= {N(f"10.5.{i}.0/24") for i in range(51, 151)}
    assert len(picks) > 50  # spread out, so hosts starting together rarely collide


def test_a_full_network_is_a_clear_error():
    small = subnet_range(4, "10.5.0.0/28", 30, None, None, "")  # three usable subnets
    taken = [lease(f"10.5.0.{4 * i}/30", f"192.168.82.{i}") for i in range(1, 4)]
    with pytest.raises(NetworkFullError, match="is full"):
        choose(listing(taken), request(), small)


def test_a_requested_subnet_is_created_and_moves_this_host():
    mine = lease("10.5.9.0/24", OURS)
    assert choose(listing([mine]), request(requested=N("10.5.40.0/24")), RNG) == Create(N("10.5.40.0/24"), (mine,))


def test_a_requested_subnet_we_hold_is_kept():
    mine = lease("10.5.40.0/24", OURS)
    assert choose(listing([mine]), request(requested=N("10.5.40.0/24")), RNG) == Keep(mine)


def test_a_requested_subnet_held_by_another_host_is_refused():
    with pytest.raises(LeaseError, match="held by 192.168.81.12"):
        choose(listing([lease("10.5.40.0/24", THEIRS)]), request(requested=N("10.5.40.0/24")), RNG)


def test_a_requested_subnet_must_fit_the_config():
    with pytest.raises(LeaseError, match="is not a /24 between 10.5.1.0 and 10.5.255.0"):
        check_requested(RNG, N("10.6.1.0/24"))
    check_requested(RNG, N("10.5.1.0/24"))
    check_requested(RNG, None)


def test_keeping_an_unchanged_lease_rewrites_nothing():
    mine = lease("10.5.9.0/24", OURS)
    plan = plan_keep(mine, request())
    assert not plan.rewrite and plan.attrs == mine.attrs and plan.etcd_lease_id == 7


def test_changed_data_is_rewritten_on_the_same_etcd_lease():
    mine = lease("10.5.9.0/24", OURS, data={"VNI": 1, "VtepMAC": "02:00:00:00:00:99"})
    plan = plan_keep(mine, request())
    assert plan.rewrite and plan.attrs.backend_data == VXLAN and plan.etcd_lease_id == 7


def test_the_module_keeps_the_agents_backend_data_of_the_same_backend():
    agents = lease("10.5.9.0/24", OURS, data={"VNI": 1, "VtepMAC": "02:00:00:00:00:99"})
    plan = plan_keep(agents, request(keep_backend_data=True))
    assert not plan.rewrite and plan.attrs == agents.attrs


def test_the_module_keeps_udp_fast_path_data_of_a_lease_without_backend_type():
    # flannel's udp leases carry no BackendType; the module writes none either
    agents = lease("10.5.9.0/24", OURS, data={"Overlaynet": {"GSO": 1}}, btype="")
    plan = plan_keep(agents, AcquireRequest(LeaseAttrs(OURS), keep_backend_data=True))
    assert not plan.rewrite and plan.attrs == agents.attrs


def test_another_backends_data_is_not_kept():
    udp = lease("10.5.9.0/24", OURS, data={"Overlaynet": {"GSO": 1}}, btype="")
    plan = plan_keep(udp, request(keep_backend_data=True))
    assert plan.rewrite and plan.attrs.backend_type == "vxlan"


def test_an_ordinary_lease_becomes_a_reservation_and_a_reservation_stays_one():
    ordinary, reserved = lease("10.5.9.0/24", OURS), lease("10.5.9.0/24", OURS, lease_id=0)
    to_reservation = plan_keep(ordinary, request(reservation=True))
    assert to_reservation.rewrite and to_reservation.etcd_lease_id == 0
    assert not plan_keep(reserved, request(reservation=False)).rewrite  # never converted back
    changed = plan_keep(lease("10.5.9.0/24", OURS, lease_id=0, data={"VNI": 2}), request())
    assert changed.rewrite and changed.etcd_lease_id == 0


def test_a_malformed_keys_subnet_counts_as_taken():
    """A key whose value is broken still names its subnet: nobody else may pick it."""
    small = subnet_range(4, "10.5.0.0/28", 30, None, None, "")  # 10.5.0.4, .8, .12
    taken = [lease("10.5.0.4/30", THEIRS)]
    broken = [Malformed("10.5.0.8-30", "not valid JSON", N("10.5.0.8/30"))]
    picks = {choose(listing(taken, broken), request(), small, random.Random(s)).subnet for s in range(50)}
    assert picks == {N("10.5.0.12/30")}
    with pytest.raises(NetworkFullError):
        choose(listing(taken, [*broken, Malformed("10.5.0.12-30", "bad", N("10.5.0.12/30"))]), request(), small)


def test_a_malformed_key_that_names_no_subnet_takes_nothing_and_blocks_nothing():
    junk = [Malformed("not-a-key", "not of the form A.B.C.D-LEN"), Malformed("10.5.9.0-24\\xff", "bad key")]
    mine = lease("10.5.9.0/24", OURS)
    assert choose(listing([mine], junk), request(), RNG) == Keep(mine)


def test_a_requested_subnet_holding_a_malformed_value_is_refused_clearly():
    broken = [Malformed("10.5.40.0-24", "stored value is not valid JSON", N("10.5.40.0/24"))]
    refused = ("held by /coreos.com/network/subnets/10.5.40.0-24, which is not a valid lease .*delete that key or "
               "request another subnet")
    with pytest.raises(LeaseError, match=refused):
        choose(listing([], broken), request(requested=N("10.5.40.0/24")), RNG)


# --- two hosts, one PublicIP ---------------------------------------------------------------

HOST_A, HOST_B = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"


def hosted(subnet: str, host: str | None) -> Lease:
    return Lease(N(subnet), LeaseAttrs(OURS, None, "vxlan", dict(VXLAN)).with_host(host), 7, 3)


def test_a_lease_of_our_public_ip_written_by_another_host_is_refused_naming_both():
    theirs = hosted("10.5.9.0/24", HOST_A)
    mine = AcquireRequest(LeaseAttrs(OURS, None, "vxlan", dict(VXLAN)).with_host(HOST_B))
    with pytest.raises(HostConflictError) as info:
        choose(listing([theirs]), mine, RNG)
    message = str(info.value)
    assert all(part in message for part in ("10.5.9.0-24", HOST_A, HOST_B, OURS, "its own public_ip"))
    assert "etcdctl del /coreos.com/network/subnets/10.5.9.0-24" in message


def test_our_own_lease_and_one_without_a_host_id_are_ours():
    mine = AcquireRequest(LeaseAttrs(OURS, None, "vxlan", dict(VXLAN)).with_host(HOST_B))
    for stored in (hosted("10.5.9.0/24", HOST_B), hosted("10.5.9.0/24", None)):  # ours; upstream's or older
        assert choose(listing([stored]), mine, RNG) == Keep(stored)


def test_the_module_claims_a_lease_without_host_id_and_keeps_the_agents_data():
    agents = Lease(N("10.5.9.0/24"), LeaseAttrs(OURS, None, "vxlan", {"VNI": 1, "VtepMAC": "02:00:00:00:00:99"}), 7, 3)
    module = AcquireRequest(LeaseAttrs(OURS, None, "vxlan", dict(VXLAN)).with_host(HOST_B), keep_backend_data=True)
    plan = plan_keep(agents, module)
    assert plan.rewrite and plan.attrs.backend_data == {"VNI": 1, "VtepMAC": "02:00:00:00:00:99",
                                                        "Overlaynet": {"Host": HOST_B}}
    assert not plan_keep(replace(agents, attrs=plan.attrs), module).rewrite  # then it is stable


def test_with_host_merges_into_our_fast_path_advertisement():
    udp = LeaseAttrs(OURS, None, "", {"Overlaynet": {"GSO": 1}}).with_host(HOST_A)
    assert udp.backend_data == {"Overlaynet": {"GSO": 1, "Host": HOST_A}} and udp.host_id == HOST_A
    assert LeaseAttrs(OURS).with_host(None) == LeaseAttrs(OURS) and LeaseAttrs(OURS).host_id is None
    assert LeaseAttrs(OURS, None, "", {"Overlaynet": {"Host": 5}}).host_id is None


@pytest.mark.parametrize("supernet", ["0.0.0.0/0", "10.5.0.0/16", "10.5.0.0/17", "10.4.0.0/15"])
def test_a_lease_for_a_supernet_of_the_subnets_takes_none_of_them(supernet):
    """A key for 0.0.0.0/0 or the whole Network would overlap every candidate: no peer
    programs such a lease, so it must not make the network look full either."""
    huge = Lease(N(supernet), LeaseAttrs("192.168.81.200", None, "vxlan", dict(VXLAN)), 7, 3)
    assert isinstance(choose(listing([huge]), request(), RNG, random.Random(1)), Create)


def test_a_smaller_lease_inside_the_network_still_counts():
    small = subnet_range(4, "10.5.0.0/28", 30, None, None, "")
    inside = [Lease(N(f"10.5.0.{n}/31"), LeaseAttrs(f"192.168.82.{n}"), 7, 3) for n in (4, 8, 12)]
    with pytest.raises(NetworkFullError):
        choose(listing(inside), request(), small)


# --- a host whose PublicIP changed -----------------------------------------------------------

NEW_IP = "192.168.81.111"


def moved_request(previous: str | None, host: str | None = HOST_B) -> AcquireRequest:
    attrs = LeaseAttrs(NEW_IP, None, "vxlan", dict(VXLAN)).with_host(host)
    return AcquireRequest(attrs, previous=N(previous) if previous else None)


def test_our_lease_under_our_old_public_ip_is_kept_and_so_rewritten_with_the_new_one():
    old = hosted("10.5.9.0/24", HOST_B)  # OURS is the old address
    decision = choose(listing([old]), moved_request("10.5.9.0/24"), RNG)
    assert decision == Keep(old)
    plan = plan_keep(old, moved_request("10.5.9.0/24"))
    assert plan.rewrite and plan.attrs.public_ip == NEW_IP and plan.etcd_lease_id == 7


@pytest.mark.parametrize(("stored_host", "previous", "host"), [
    (HOST_A, "10.5.9.0/24", HOST_B),  # another host's lease at our previous subnet
    (HOST_B, None, HOST_B),  # no subnet file: a host id alone may be a cloned machine-id
    (HOST_B, "10.5.10.0/24", HOST_B),  # our host id, but not the subnet we had
    (None, "10.5.9.0/24", HOST_B),  # no host id: anybody's
    (HOST_B, "10.5.9.0/24", None),  # we have no host id
], ids=["other host", "no previous", "other subnet", "lease without host id", "we without host id"])
def test_a_lease_under_another_public_ip_is_taken_over_only_when_both_subnet_and_host_id_say_ours(
        stored_host, previous, host):
    old = hosted("10.5.9.0/24", stored_host)
    decision = choose(listing([old]), moved_request(previous, host), RNG, random.Random(3))
    assert isinstance(decision, Create) and decision.subnet != N("10.5.9.0/24") and decision.moved_from == ()


def test_a_reservation_under_another_public_ip_is_never_taken_over():
    old = replace(hosted("10.5.9.0/24", HOST_B), etcd_lease_id=0)  # no etcd lease: a reservation
    decision = choose(listing([old]), moved_request("10.5.9.0/24"), RNG, random.Random(3))
    assert isinstance(decision, Create) and decision.subnet != N("10.5.9.0/24")


def test_after_lost_races_the_pick_is_among_more_free_subnets():
    assert [pick_window(lost) for lost in (0, 1, 2, 6, 50)] == [100, 200, 400, 6400, 6400]
    big = subnet_range(4, "10.0.0.0/8", 24, None, None, "")
    picks = {choose(listing([]), request(), big, random.Random(seed), pick_window(3)).subnet for seed in range(300)}
    assert picks <= set(free_subnets(big, [], 800)) and max(picks) > max(free_subnets(big, [], 100))
