"""allocator: free_subnets / pick_subnet, checked against a brute-force reference.

flannel's rule (DESIGN §3): pick at random among the first 100 free subnets between
SubnetMin and SubnetMax; a full network is a clear error.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import netaddr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import LeaseError, NetworkFullError
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.allocator import (
    PICK_AMONG,
    free_subnets,
    pick_subnet,
)
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.range import subnet_range

MAX_WINDOW = 1500  # subnets between SubnetMin and SubnetMax, so the reference stays fast


@dataclass(frozen=True)
class Case:
    network: str
    subnet_len: int
    low: int  # SubnetMin as an integer
    high: int  # SubnetMax as an integer
    config: tuple  # the arguments given to subnet_range

    @property
    def step(self) -> int:
        return 1 << (32 - self.subnet_len)

    def rng(self):
        return subnet_range(4, *self.config, "")


def _mask(prefix: int) -> int:
    return (2**32 - 1) ^ (2 ** (32 - prefix) - 1)


def _ip(value: int) -> str:
    return str(netaddr.IPAddress(value, version=4))


@st.composite
def cases(draw) -> Case:
    prefix = draw(st.integers(8, 28))
    base = draw(st.integers(0, 2**32 - 1)) & _mask(prefix)
    subnet_len = draw(st.integers(prefix + 2, 30))
    step = 1 << (32 - subnet_len)
    total = 1 << (subnet_len - prefix)
    first = draw(st.integers(0, total - 1))
    last = draw(st.integers(first, min(total - 1, first + MAX_WINDOW - 1)))
    network = f"{_ip(base)}/{prefix}"
    low, high = base + first * step, base + last * step
    spell_len = subnet_len if (subnet_len != (24 if prefix <= 22 else prefix + 2) or draw(st.booleans())) else None
    return Case(network, subnet_len, low, high, (network, spell_len, _ip(low), _ip(high)))


@st.composite
def taken_for(draw, case: Case) -> list[netaddr.IPNetwork]:
    """Leases and other networks: exact subnets inside the range, overlapping networks of other
    sizes (bigger and smaller than a subnet), single addresses on subnet edges (inside and just
    outside the range), and networks anywhere (mostly outside)."""
    count = (case.high - case.low) // case.step + 1
    taken = []
    kinds = st.sampled_from(["lease", "overlap", "edge", "anywhere"])
    for kind in draw(st.lists(kinds, max_size=25)):
        if kind == "lease":
            index = draw(st.integers(0, count - 1))
            taken.append(netaddr.IPNetwork((case.low + index * case.step, case.subnet_len), version=4))
        elif kind == "edge":
            # a /32 on the first or last address of a subnet, or just outside the range
            index = draw(st.integers(-1, count))
            addr = case.low + index * case.step + draw(st.sampled_from([0, case.step - 1]))
            taken.append(netaddr.IPNetwork((addr % 2**32, 32), version=4))
        elif kind == "overlap":
            addr = draw(st.integers(case.low, case.high + case.step - 1))
            prefix = draw(st.integers(max(1, case.subnet_len - 8), 32))
            taken.append(netaddr.IPNetwork((addr & _mask(prefix), prefix), version=4))
        else:
            prefix = draw(st.integers(4, 32))
            addr = draw(st.integers(0, 2**32 - 1))
            taken.append(netaddr.IPNetwork((addr & _mask(prefix), prefix), version=4))
    return taken


def reference_free(case: Case, taken, limit: int = PICK_AMONG) -> list[str]:
    """Walk every subnet from SubnetMin to SubnetMax; keep the ones no taken network touches."""
    spans = [(int(t.first), int(t.last)) for t in taken]
    free = []
    start = case.low
    while start <= case.high and len(free) < limit:
        end = start + case.step - 1
        if not any(first <= end and start <= last for first, last in spans):
            free.append(f"{_ip(start)}/{case.subnet_len}")
        start += case.step
    return free


def _assert_valid_pick(case: Case, taken, pick: netaddr.IPNetwork) -> None:
    assert pick.version == 4
    assert pick.prefixlen == case.subnet_len
    assert int(pick.ip) % case.step == 0, "not aligned to SubnetLen"
    assert case.low <= int(pick.ip) <= case.high, "outside SubnetMin..SubnetMax"
    for other in taken:
        assert not (int(other.first) <= int(pick.last) and int(pick.first) <= int(other.last)), f"overlaps {other}"


@st.composite
def case_and_taken(draw):
    case = draw(cases())
    return case, draw(taken_for(case))


FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
QUICK = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(case_and_taken(), st.integers(0, 2**32))
def test_pick_matches_reference(args, seed):
    case, taken = args
    expected = reference_free(case, taken)
    rng = case.rng()
    assert [str(s) for s in free_subnets(rng, taken)] == expected
    if not expected:
        with pytest.raises(NetworkFullError):
            pick_subnet(rng, taken, random.Random(seed))
        return
    pick = pick_subnet(rng, taken, random.Random(seed))
    assert str(pick) in expected  # one of the first 100 free subnets
    _assert_valid_pick(case, taken, pick)


@QUICK
@given(case_and_taken(), st.integers(1, 130))
def test_free_subnets_limit(args, limit):
    case, taken = args
    assert [str(s) for s in free_subnets(case.rng(), taken, limit)] == reference_free(case, taken, limit)


@QUICK
@given(case_and_taken(), st.integers(0, 2**32))
def test_taken_may_be_any_iterable_in_any_order(args, seed):
    case, taken = args
    shuffled = list(taken)
    random.Random(seed).shuffle(shuffled)
    assert [str(s) for s in free_subnets(case.rng(), iter(shuffled))] == reference_free(case, taken)


@QUICK
@given(case_and_taken(), st.integers(0, 2**32))
def test_same_seed_same_pick(args, seed):
    case, taken = args
    if not reference_free(case, taken):
        return
    first = pick_subnet(case.rng(), taken, random.Random(seed))
    assert pick_subnet(case.rng(), taken, random.Random(seed)) == first


@st.composite
def small_cases(draw) -> Case:
    case = draw(cases())
    count = (case.high - case.low) // case.step + 1
    if count > 40:  # keep allocate-until-full short
        high = case.low + draw(st.integers(0, 39)) * case.step
        case = Case(case.network, case.subnet_len, case.low, high,
                    (case.network, case.subnet_len, _ip(case.low), _ip(high)))
    return case


@settings(max_examples=60, deadline=None)
@given(small_cases(), st.integers(0, 2**32))
def test_allocate_until_full(case, seed):
    rng = case.rng()
    rand = random.Random(seed)
    everything = reference_free(case, [], limit=10**6)
    taken: list[netaddr.IPNetwork] = []
    for _unused in everything:
        pick = pick_subnet(rng, taken, rand)
        _assert_valid_pick(case, taken, pick)
        taken.append(pick)
    assert sorted(str(t) for t in taken) == sorted(everything)
    with pytest.raises(NetworkFullError) as info:
        pick_subnet(rng, taken, rand)
    message = str(info.value)
    assert "full" in message
    for needle in (case.network, _ip(case.low), _ip(case.high), f"/{case.subnet_len}"):
        assert needle in message, f"{needle!r} missing from {message!r}"


def test_allocate_whole_16_past_the_first_hundred():
    rng = subnet_range(4, "10.3.0.0/16", None, None, None, "")
    rand = random.Random(7)
    taken: list[netaddr.IPNetwork] = []
    for n in range(255):
        pick = pick_subnet(rng, taken, rand)
        # the first 100 free subnets are the lowest ones not yet taken
        lowest_free = sorted(set(range(1, 256)) - {int(t.ip) >> 8 & 0xFF for t in taken})[:100]
        assert (int(pick.ip) >> 8 & 0xFF) in lowest_free, n
        taken.append(pick)
    assert sorted(int(t.ip) >> 8 & 0xFF for t in taken) == list(range(1, 256))
    with pytest.raises(NetworkFullError, match="10.3.0.0/16"):
        pick_subnet(rng, taken, rand)


def test_picks_are_spread_over_the_first_hundred():
    rng = subnet_range(4, "10.3.0.0/16", None, None, None, "")
    picks = {str(pick_subnet(rng, [], random.Random(seed))) for seed in range(1200)}
    assert picks == {f"10.3.{i}.0/24" for i in range(1, 101)}


def test_pick_uses_the_given_random():
    rng = subnet_range(4, "10.3.0.0/16", None, None, None, "")
    seeds = range(50)
    first = [pick_subnet(rng, [], random.Random(s)) for s in seeds]
    assert first == [pick_subnet(rng, [], random.Random(s)) for s in seeds]
    assert len(set(first)) > 10


@pytest.mark.parametrize(
    ("taken", "expected_first"),
    [
        (["10.3.0.0/17"], "10.3.128.0/24"),  # one big block from the start
        (["10.3.1.0/24", "10.3.2.0/23", "10.3.4.128/25"], "10.3.5.0/24"),  # mixed sizes
        (["10.3.1.7/32"], "10.3.2.0/24"),  # a single address blocks its subnet
        (["10.0.0.0/8"], None),  # everything
        (["10.3.0.0/24", "10.4.0.0/16", "192.168.0.0/16"], "10.3.1.0/24"),  # outside/skipped first
    ],
)
def test_free_subnets_examples(taken, expected_first):
    rng = subnet_range(4, "10.3.0.0/16", None, None, None, "")
    free = free_subnets(rng, [netaddr.IPNetwork(t) for t in taken])
    if expected_first is None:
        assert free == []
    else:
        assert str(free[0]) == expected_first


def test_network_full_is_a_lease_error_with_the_fix():
    rng = subnet_range(4, "10.3.0.0/24", 26, None, None, "")
    taken = [netaddr.IPNetwork(f"10.3.0.{i}/26") for i in (64, 128, 192)]
    with pytest.raises(LeaseError) as info:
        pick_subnet(rng, taken)
    assert isinstance(info.value, NetworkFullError)
    message = str(info.value)
    for needle in ("10.3.0.0/24", "/26", "10.3.0.64", "10.3.0.192", "full"):
        assert needle in message
