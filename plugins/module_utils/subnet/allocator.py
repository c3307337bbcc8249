"""Which subnet a host gets: pure functions over the config and the taken subnets."""

from __future__ import annotations

import random
from collections.abc import Iterable

from ..deps import netaddr
from ..errors import NetworkFullError
from .range import SubnetRange

# flannel picks at random among the first 100 free subnets, so that hosts starting at the
# same time rarely collide while low subnets are still used first.
PICK_AMONG = 100
# A host that lost the race for its pick picks again among twice as many, up to 64 times as
# many: when thousands of hosts start at once, 100 candidates would make nearly all of them
# lose round after round, each loss costing a listing of every lease (quadratic in hosts).
WIDEN_UP_TO = 6


def pick_window(races_lost: int) -> int:
    """How many of the first free subnets a pick is made among, after *races_lost* lost races."""
    return PICK_AMONG * 2 ** min(races_lost, WIDEN_UP_TO)


def free_subnets(
    rng: SubnetRange, taken: Iterable[netaddr.IPNetwork], limit: int = PICK_AMONG
) -> list[netaddr.IPNetwork]:
    """The first `limit` subnets between SubnetMin and SubnetMax that nothing overlaps."""
    taken_ranges = sorted((int(t.first), int(t.last)) for t in taken)
    free: list[netaddr.IPNetwork] = []
    index, pos = 0, 0
    while index < rng.count and len(free) < limit:
        candidate = rng.subnet_at(index)
        first, last = int(candidate.first), int(candidate.last)
        # skip taken ranges that end before this candidate
        while pos < len(taken_ranges) and taken_ranges[pos][1] < first:
            pos += 1
        if pos < len(taken_ranges) and taken_ranges[pos][0] <= last:
            # overlap: jump past the taken range rather than walking subnet by subnet
            index = max(index + 1, (taken_ranges[pos][1] + 1 - int(rng.subnet_min)) // rng.step)
            continue
        free.append(candidate)
        index += 1
    return free


def is_free(subnet: netaddr.IPNetwork, taken: Iterable[netaddr.IPNetwork]) -> bool:
    """True when no taken network overlaps subnet."""
    return not any(t.first <= subnet.last and subnet.first <= t.last for t in taken)


def pick_subnet(
    rng: SubnetRange, taken: Iterable[netaddr.IPNetwork], rand: random.Random | None = None,
    among: int = PICK_AMONG,
) -> netaddr.IPNetwork:
    """A random pick among the first *among* free subnets; NetworkFullError when none is left."""
    candidates = free_subnets(rng, taken, among)
    if not candidates:
        raise NetworkFullError(
            f"network {rng.network} is full: all {rng.count} subnets of /{rng.subnet_len} between "
            f"{rng.subnet_min} and {rng.subnet_max} are leased; release unused leases or widen the network"
        )
    return (rand or random).choice(candidates)
