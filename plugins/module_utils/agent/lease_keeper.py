"""Our own lease once the agent runs: renewed before the margin, our data written back when
someone rewrote it, and its loss reported (the agent exits on that, as flanneld does).

One loss is not final: a lease that lapsed because we could not reach etcd for longer than
its TTL (we know when it was last confirmed, and for how long) is created again, same
subnet, if nobody took it meanwhile; if somebody did, the agent exits and its restart takes
a new subnet. A lease deleted while we could still renew it was removed on purpose (an
operator, state=absent): that stays an exit."""

from __future__ import annotations

import logging
import math
import time

from ..errors import EtcdUnavailableError, FlannelError, LeaseError, shown
from ..etcd.registry import LeaseRegistry
from ..subnet.lease import Lease, LeaseAttrs
from .scheduler import Scheduler

RENEW_CHECK = 60.0  # at most this long between looks at the TTL while the margin is near (short TTLs)
LONGEST_SLEEP = 86400.0  # a reservation (no TTL) is looked at once a day
REWRITE_EVERY = 10.0  # at most this often do we write our data back into a rewritten lease
RENEW_JOB = "renew"
log = logging.getLogger("flannel-agent")


class LeaseLost(FlannelError):
    """Our lease was deleted, expired or taken over: flanneld exits on this, and so do we."""


class LeaseKeeper:
    def __init__(self, registry: LeaseRegistry, attrs: LeaseAttrs, own: Lease, ttl: int, renew_margin: int,
                 scheduler: Scheduler) -> None:
        self.registry = registry
        self.attrs = attrs  # what we publish
        self.own = own  # our lease as last seen
        self.ttl = ttl
        self.renew_margin = renew_margin  # seconds
        self._scheduler = scheduler
        self._last_rewrite = -REWRITE_EVERY
        # When the lease runs out, as far as we know (monotonic), as two bounds: etcd's TTL is
        # whole seconds rounded down and a request takes time. The earliest moment sets the
        # renewal (never late by the rounding) and says when a missing key may have expired
        # on its own (before it, it was deleted on purpose); the latest one is what /metrics
        # shows. After a (re)new both are now + TTL; a reservation never runs out.
        self._expires_earliest = self._expires_by = self._after_ttl(own)
        # The first look at the TTL right away: a lease adopted from the module carries the
        # module's TTL until then, and a host that dies meanwhile would keep it that long.
        scheduler.due_at(RENEW_JOB, time.monotonic())

    def _after_ttl(self, lease: Lease, sent: float | None = None) -> float:
        """When *lease*, just given our TTL by a request sent at *sent* (now if None), runs out."""
        if lease.is_reservation:
            return math.inf
        return (time.monotonic() if sent is None else sent) + self.ttl

    def _fresh(self, lease: Lease, sent: float) -> None:
        """*lease* got our TTL from a request sent at *sent* and answered now."""
        self.own = lease
        self._expires_earliest, self._expires_by = self._after_ttl(lease, sent), self._after_ttl(lease)

    def expires_at(self) -> float:
        """When our lease runs out at the latest unless renewed, in unix seconds (+Inf for a
        reservation): what the last renewal or TTL check learnt."""
        return time.time() + (self._expires_by - time.monotonic())

    def _lapsed(self) -> bool:
        """True when our lease may have expired on its own (we could not renew it in time)."""
        return time.monotonic() >= self._expires_earliest

    def _still_ours(self) -> bool:
        """Our key, read now, holds our lease (the event that said otherwise is history)."""
        try:
            current = self.registry.get_lease(self.own.subnet)
        except (EtcdUnavailableError, LeaseError):
            return False
        if current is None or current.attrs.public_ip != self.attrs.public_ip:
            return False
        if current.attrs.host_id not in (None, self.attrs.host_id):
            return False
        self.own = current
        return True

    def _take_back(self, why: str) -> None:
        """Our lease lapsed while etcd was out of reach: create the same key again, if free."""
        subnet, sent = self.own.subnet, time.monotonic()
        created = self.registry.create(subnet, self.attrs, self.ttl, reservation=False)
        if created is None:
            try:
                holder = self.registry.get_lease(subnet)
            except LeaseError:  # a malformed value: taken all the same
                holder = None
            by = f" by {holder.attrs.public_ip}" if holder is not None else ""
            raise LeaseLost(f"our lease {self.own.key} expired while etcd was unreachable ({why}) and "
                            f"{subnet} was taken{by} meanwhile; a restart takes a new subnet (docker_bridge "
                            f"moves docker0 to it on the next converge)")
        log.warning("our lease %s expired while etcd was unreachable (%s); took %s back", self.own.key, why, subnet)
        self._fresh(created, sent)

    @property
    def renew_every(self) -> float:
        """The shortest wait between two looks at the TTL (a margin as long as the TTL renews at each)."""
        return min(RENEW_CHECK, self.ttl / 4)

    def next_look(self) -> float:
        """Seconds until the renewal is due: the lease's known expiry less the margin. So a host
        costs etcd a look and a renewal once per TTL − margin (23 h at the defaults), as flanneld,
        not a request a minute; a change to our key in between (another TTL, a delete) comes
        through the watch, and check() looks again at once."""
        due_in = self._expires_earliest - self.renew_margin - time.monotonic()
        return min(max(due_in, self.renew_every), LONGEST_SLEEP)

    def check(self, lease: Lease | None, how: str) -> None:
        """Our key as just seen (None: gone or malformed). LeaseLost when it is no longer ours;
        when it carries other data, our data is written back from the timer (never in a loop)."""
        if lease is None and self._still_ours():
            return  # a stale event: a resumed watch replays the delete before our take-back
        if lease is None and self._lapsed():
            self._take_back("missing" if how == "list" else "deleted")
            return
        if lease is None:
            raise LeaseLost(f"our lease {self.registry.subnets_prefix}{self.own.key} is gone "
                            f"({'deleted' if how == 'delete' else 'missing or malformed'}; by an operator or expired)")
        if lease.attrs.public_ip != self.attrs.public_ip:
            lapsed = " (it expired while etcd was unreachable; a restart takes a new subnet)" if self._lapsed() else ""
            raise LeaseLost(f"our lease {self.own.key} now belongs to {lease.attrs.public_ip}{lapsed}")
        if lease.attrs.host_id not in (None, self.attrs.host_id):
            raise LeaseLost(f"our lease {self.own.key} was taken by another host with our PublicIP "
                            f"{self.attrs.public_ip} (host id {lease.attrs.host_id}; ours is {self.attrs.host_id})")
        if lease.etcd_lease_id != self.own.etcd_lease_id:  # someone put it with another TTL: look at it now
            self._scheduler.due_at(RENEW_JOB, time.monotonic())
        self.own = lease
        if lease.attrs != self.attrs:
            self._scheduler.due_at(RENEW_JOB, max(time.monotonic(), self._last_rewrite + REWRITE_EVERY))

    def renew(self) -> float:
        """The timer job: write our data back if needed, renew before the margin.

        The write-back rewrites our own key in place (never a new pick: the backend and the
        subnet file run on this subnet); if the key moved meanwhile, the next event says
        whether it is still ours."""
        try:
            if self.own.attrs != self.attrs:
                log.warning("lease %s carries %s; writing ours back", self.own.key, shown(self.own.attrs.to_json()))
                self._last_rewrite = time.monotonic()
                try:
                    self.own = self.registry.update(self.own, self.attrs, self.own.etcd_lease_id)
                except LeaseError as exc:
                    log.info("%s; looking again after the next change", exc)
                    return REWRITE_EVERY
            self._renew_if_due()
        except EtcdUnavailableError as exc:
            log.info("could not check the lease's TTL (%s); trying again later", exc)
            return min(10.0, self.renew_every)
        except LeaseError as exc:
            if not self._lapsed():
                raise LeaseLost(str(exc)) from None
            self._take_back(str(exc))
        return self.next_look()

    def _renew_if_due(self) -> None:
        """Renew before the margin, and a lease adopted with a longer TTL (the module's) at
        once: a host that dies goes within our --subnet-lease-ttl. A shorter one is kept."""
        if self.own.is_reservation:
            return
        sent = time.monotonic()
        remaining, granted = self.registry.lifetime(self.own)
        # At the look timed by next_look() etcd answers the margin itself (the TTL rounded
        # down): that is when to renew, not one more look later.
        if remaining > self.renew_margin and granted <= self.ttl:
            # etcd rounds the TTL down, at some moment between our sending and its answer
            self._expires_earliest, self._expires_by = sent + remaining, time.monotonic() + remaining + 1
            return
        sent = time.monotonic()
        self._fresh(self.registry.renew(self.own, ttl=self.ttl), sent)
        log.info("renewed lease %s for %ds (%ds of %ds were left)", self.own.key, self.ttl, remaining, granted)
