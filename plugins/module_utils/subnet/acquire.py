"""How a host gets, keeps and gives back its lease: flannel's policy, over any lease store.

Order (DESIGN §3): the requested subnet, when given; else a lease already holding our
PublicIP, if it still fits the config; else our own lease from before our PublicIP changed
(the subnet of the previous subnet.env, held under another PublicIP by a lease with our
host id: rewritten in place with the new PublicIP, so the subnet, docker0 and the peers'
routes follow the host); else the subnet of the previous subnet.env, if free and fitting;
else a random pick among the first 100 free subnets. A new key is created only if it does
not exist yet; when another host wins that race, the leases are listed again and the choice
is made again (upstream flannel gives up here; we must not), a pick among twice as many free
subnets after each lost race (allocator.pick_window), so thousands of hosts starting at once
do not collide round after round. When another run for this same
host (a second converge at once, the agent) created a lease between our listing and our
create, the first created wins in every run: the later one is deleted again.

``choose`` and ``plan_keep`` decide and touch nothing; ``acquire`` and ``release`` carry
the decisions out on a ``LeaseBook`` (in production the etcd registry, etcd/registry.py).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from ..backends.registry import same_backend
from ..defaults import DEFAULT_LEASE_TTL
from ..deps import netaddr
from ..errors import HostConflictError, LeaseError
from .allocator import PICK_AMONG, is_free, pick_subnet, pick_window
from .config import NetworkConfig
from .lease import Lease, LeaseAttrs, Listing, Malformed
from .range import SubnetRange

MAX_RACE_RETRIES = 50


class LeaseBook(Protocol):
    """What the policy needs of a lease store."""

    @property
    def subnets_prefix(self) -> str: ...

    def get_config(self) -> NetworkConfig: ...

    def list_leases(self) -> Listing:
        """Every lease, and the keys holding none (their subnets count as taken)."""

    def list_changed(self, after: int) -> Listing:
        """The keys written after revision `after` (as list_leases, but only those)."""

    def create(self, subnet: netaddr.IPNetwork, attrs: LeaseAttrs, ttl: int, reservation: bool) -> Lease | None:
        """The new lease, or None when the key exists already (a lost race)."""

    def update(self, lease: Lease, attrs: LeaseAttrs, etcd_lease_id: int) -> Lease:
        """The lease with a new value (LeaseError when it changed meanwhile)."""

    def refresh(self, lease: Lease) -> None:
        """A fresh TTL for the lease's etcd lease."""

    def lifetime(self, lease: Lease) -> tuple[int, int]:
        """Seconds the lease's etcd lease has left, and the TTL it was granted."""

    def delete(self, lease: Lease) -> None:
        """Delete the key if it is still as read, and revoke its etcd lease."""


@dataclass(frozen=True)
class AcquireRequest:
    attrs: LeaseAttrs  # what this host publishes; attrs.public_ip identifies it
    ttl: int = DEFAULT_LEASE_TTL
    requested: netaddr.IPNetwork | None = None  # a specific subnet (the module's `subnet`)
    previous: netaddr.IPNetwork | None = None  # the subnet of the previous subnet.env
    reservation: bool = False  # a key without TTL (never expires, never converted back)
    keep_backend_data: bool = False  # keep the stored BackendData (the module cannot know the agent's)
    # refresh the TTL when fewer seconds than this are left, or than half the TTL the lease was
    # granted (its holder's, e.g. an agent with a short --subnet-lease-ttl, renewing it itself)
    renew_below: int | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class AcquireResult:
    lease: Lease
    changed: bool
    action: str  # "kept", "updated", "renewed", "created", "moved"
    previous: Lease | None = None  # the lease before the change, if any
    malformed: tuple[Malformed, ...] = ()  # keys seen that hold no lease (reported, skipped)
    races_lost: int = 0  # creates another host won before ours went through (each re-listed and re-chosen)


@dataclass(frozen=True)
class Keep:
    """Hold on to this existing lease (maybe with new data or a fresh TTL)."""

    lease: Lease


@dataclass(frozen=True)
class Create:
    """Create a key for this subnet; the host's other leases go once it exists."""

    subnet: netaddr.IPNetwork
    moved_from: tuple[Lease, ...] = ()


def check_requested(rng: SubnetRange, requested: netaddr.IPNetwork | None) -> None:
    if requested is not None and not rng.fits(requested):
        raise LeaseError(
            f"requested subnet {requested} is not a /{rng.subnet_len} between {rng.subnet_min} and "
            f"{rng.subnet_max} of network {rng.network}; pick one that is"
        )


def choose(listing: Listing, request: AcquireRequest, rng: SubnetRange,
           rand: random.Random | None = None, among: int = PICK_AMONG) -> Keep | Create:
    """What to do, given every lease as listed now (pure, but for the random pick among the
    first *among* free subnets)."""
    ours, leases = request.attrs.public_ip, listing.leases
    mine = tuple(lease for lease in leases if lease.attrs.public_ip == ours)
    _check_same_host(mine, request.attrs, listing.prefix)
    if request.requested is not None:
        _check_not_malformed(listing, request.requested)
        holder = next((lease for lease in leases if lease.subnet == request.requested), None)
        if holder is not None and holder.attrs.public_ip != ours:
            raise LeaseError(
                f"requested subnet {request.requested} is held by {holder.attrs.public_ip}; "
                "release it there first or request another subnet"
            )
        return Keep(holder) if holder is not None else Create(request.requested, mine)
    fitting = [lease for lease in mine if rng.fits(lease.subnet)]
    if fitting:
        return Keep(fitting[0])
    previous = request.previous
    before_move = _ours_under_another_ip(leases, request, rng)
    if before_move is not None:
        return Keep(before_move)
    taken = _blocking(listing.taken, rng)
    if previous is not None and rng.fits(previous) and is_free(previous, taken):
        return Create(previous, mine)
    return Create(pick_subnet(rng, taken, rand, among), mine)


def _ours_under_another_ip(leases: Sequence[Lease], request: AcquireRequest, rng: SubnetRange) -> Lease | None:
    """Our lease from before our PublicIP changed: at the subnet of our previous subnet.env,
    carrying our host id, under another PublicIP. Both must hold: a host id alone could be
    a cloned machine-id, and the subnet file alone another host's subnet. A reservation is
    pinned to its PublicIP by an operator: never taken over this way."""
    previous, host = request.previous, request.attrs.host_id
    if previous is None or host is None or not rng.fits(previous):
        return None
    return next((lease for lease in leases
                 if lease.subnet == previous and lease.attrs.host_id == host and not lease.is_reservation
                 and lease.attrs.public_ip != request.attrs.public_ip), None)


def _blocking(taken: Sequence[netaddr.IPNetwork], rng: SubnetRange) -> list[netaddr.IPNetwork]:
    """The taken subnets that keep a candidate from being picked: inside the Network and no
    larger than SubnetLen. A key for 0.0.0.0/0 or the whole Network would otherwise take
    every subnet at once; no peer programs such a lease, so it blocks nothing."""
    network = rng.network
    return [subnet for subnet in taken
            if subnet.version == network.version and subnet in network and subnet.prefixlen >= rng.subnet_len]


def _check_same_host(mine: Sequence[Lease], attrs: LeaseAttrs, prefix: str) -> None:
    """Leases holding our PublicIP but written by another host: two hosts claim one address.
    Sharing the lease would make them overwrite each other's data for ever; refuse."""
    if attrs.host_id is None:
        return
    for lease in mine:
        theirs = lease.attrs.host_id
        if theirs is not None and theirs != attrs.host_id:
            raise HostConflictError(
                f"PublicIP {attrs.public_ip} is already leased by another host: key {lease.key} carries host id "
                f"{theirs}, this host is {attrs.host_id}. Give each host its own public_ip (or iface); if this "
                f"host replaced that one, release the old lease first (flannel_lease state=absent or "
                f"etcdctl del {prefix}{lease.key})"
            )


def _check_not_malformed(listing: Listing, subnet: netaddr.IPNetwork) -> None:
    bad = next((m for m in listing.malformed if m.subnet == subnet), None)
    if bad is not None:
        raise LeaseError(f"requested subnet {subnet} is held by {listing.prefix}{bad.key}, which is not a valid "
                         f"lease ({bad.reason}); delete that key or request another subnet")


@dataclass(frozen=True)
class KeepPlan:
    """What keeping a lease takes: nothing, a fresh TTL, or a new value."""

    attrs: LeaseAttrs  # the value the lease should hold
    rewrite: bool  # the value (or reservation-ness) changes
    etcd_lease_id: int  # the etcd lease the rewritten key is attached to (0: a reservation)


def plan_keep(lease: Lease, request: AcquireRequest) -> KeepPlan:
    wanted = request.attrs
    if request.keep_backend_data and same_backend(lease.attrs.backend_type, wanted.backend_type):
        # The module cannot know what the agent advertises (VtepMAC, fast path): keep it,
        # with our host id (a lease from upstream or an older version has none yet).
        kept = replace(wanted, backend_type=lease.attrs.backend_type, backend_data=lease.attrs.backend_data)
        wanted = kept.with_host(request.attrs.host_id)
    if wanted == lease.attrs and (lease.is_reservation or not request.reservation):
        return KeepPlan(wanted, False, lease.etcd_lease_id)
    # The data changed, or an ordinary lease becomes a reservation; a reservation stays one.
    # Only the data changing keeps the expiry (the same etcd lease).
    to_reservation = request.reservation or lease.is_reservation
    return KeepPlan(wanted, True, 0 if to_reservation else lease.etcd_lease_id)


def acquire(book: LeaseBook, request: AcquireRequest, rand: random.Random | None = None) -> AcquireResult:
    """Get this host a lease, flannel's way (see the module doc)."""
    rng = book.get_config().network_range
    check_requested(rng, request.requested)
    listing = book.list_leases()
    for attempt in range(MAX_RACE_RETRIES):
        if attempt:  # after a lost race, only what was written since (Listing.merged)
            listing = listing.merged(book.list_changed(listing.revision))
        decision = choose(listing, request, rng, rand, pick_window(attempt))
        if isinstance(decision, Keep):
            result: AcquireResult | None = _keep(book, decision.lease, request)
        else:
            result = _create(book, decision, request, listing.revision)
        if result is not None:
            return replace(result, malformed=tuple(listing.malformed), races_lost=attempt)
    raise LeaseError(
        f"could not create a lease after {MAX_RACE_RETRIES} lost races; is something creating keys "
        f"under {book.subnets_prefix} in a loop?"
    )


def _keep(book: LeaseBook, lease: Lease, request: AcquireRequest) -> AcquireResult:
    plan = plan_keep(lease, request)
    if not plan.rewrite:
        if lease.is_reservation or request.renew_below is None:
            return AcquireResult(lease, False, "kept")
        remaining, granted = book.lifetime(lease)
        if remaining >= min(request.renew_below, granted // 2 if granted > 0 else request.renew_below):
            return AcquireResult(lease, False, "kept")
        if not request.dry_run:
            book.refresh(lease)
        return AcquireResult(lease, True, "renewed", lease)
    if request.dry_run:
        return AcquireResult(replace(lease, attrs=plan.attrs, etcd_lease_id=plan.etcd_lease_id), True, "updated", lease)
    return AcquireResult(book.update(lease, plan.attrs, plan.etcd_lease_id), True, "updated", lease)


def _create(book: LeaseBook, decision: Create, request: AcquireRequest, listed_at: int) -> AcquireResult | None:
    """The created lease; None when another host won the race for the key. listed_at: the
    revision of the listing the decision was made on."""
    action = "moved" if decision.moved_from else "created"
    previous = decision.moved_from[0] if decision.moved_from else None
    if request.dry_run:
        return AcquireResult(Lease(decision.subnet, request.attrs), True, action, previous)
    created = book.create(decision.subnet, request.attrs, request.ttl, request.reservation)
    if created is None:
        return None
    for old in decision.moved_from:  # this host moved: its old leases go
        book.delete(old)
    first = None if request.requested is not None else _created_before(book, created, listed_at)
    if first is not None:
        book.delete(created)  # another run for this host was first: one host, one lease
        return _keep(book, first, request)
    return AcquireResult(created, True, action, previous)


def _created_before(book: LeaseBook, created: Lease, listed_at: int) -> Lease | None:
    """A lease for our PublicIP that another run for this host created between our listing
    and our create (two converges at once): the first created, which every run keeps.
    Only keys written after the listing can be one: a twin listed already was ours to keep
    (or, not fitting, was deleted as we moved)."""
    twins = [lease for lease in book.list_changed(listed_at).leases
             if lease.attrs.public_ip == created.attrs.public_ip and lease.key != created.key
             and lease.attrs.host_id in (None, created.attrs.host_id)
             and 0 < lease.create_revision < created.create_revision]
    return min(twins, key=lambda lease: lease.create_revision, default=None)


def release(book: LeaseBook, public_ip: str, subnet: netaddr.IPNetwork | None = None,
            dry_run: bool = False, host: str | None = None) -> list[Lease]:
    """Delete this host's leases (or just `subnet`, when it is ours); return what went.
    With `host`, a lease another host wrote for the same PublicIP is not ours to delete."""
    leases = book.list_leases().leases
    gone = [lease for lease in leases
            if lease.attrs.public_ip == public_ip and (subnet is None or lease.subnet == subnet)
            and (host is None or lease.attrs.host_id in (None, host))]
    if not dry_run:
        for lease in gone:
            book.delete(lease)
    return gone
