"""Our own lease once the agent runs: renewed before the margin, our data written back when
someone rewrote it, and its loss reported (the agent exits on that, as flanneld does)."""

from __future__ import annotations

import logging
import time

from ..errors import EtcdUnavailableError, FlannelError, LeaseError, shown
from ..etcd.registry import LeaseRegistry
from ..subnet.lease import Lease, LeaseAttrs
from .scheduler import Scheduler

RENEW_CHECK = 60.0  # seconds between looks at the lease's remaining TTL
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

    @property
    def renew_every(self) -> float:
        return min(RENEW_CHECK, self.ttl / 4)

    def check(self, lease: Lease | None, how: str) -> None:
        """Our key as just seen (None: gone or malformed). LeaseLost when it is no longer ours;
        when it carries other data, our data is written back from the timer (never in a loop)."""
        if lease is None:
            raise LeaseLost(f"our lease {self.registry.subnets_prefix}{self.own.key} is gone "
                            f"({'deleted' if how == 'delete' else 'missing or malformed'}; by an operator or expired)")
        if lease.attrs.public_ip != self.attrs.public_ip:
            raise LeaseLost(f"our lease {self.own.key} now belongs to {lease.attrs.public_ip}")
        if lease.attrs.host_id not in (None, self.attrs.host_id):
            raise LeaseLost(f"our lease {self.own.key} was taken by another host with our PublicIP "
                            f"{self.attrs.public_ip} (host id {lease.attrs.host_id}; ours is {self.attrs.host_id})")
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
            remaining = self.registry.lease_expires_in(self.own)
            if remaining is not None and remaining < self.renew_margin:
                self.own = self.registry.renew(self.own, ttl=self.ttl)
                log.info("renewed lease %s (%gs were left)", self.own.key, remaining)
        except EtcdUnavailableError as exc:
            log.info("could not check the lease's TTL (%s); trying again later", exc)
            return min(10.0, self.renew_every)
        except LeaseError as exc:
            raise LeaseLost(str(exc)) from None
        return self.renew_every
