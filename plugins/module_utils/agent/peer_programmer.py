"""The other hosts' leases -> the backend: which leases are peers, and the calls that program
them. One bad peer is logged and skipped; the next repair round retries it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from ..backends.base import Backend
from ..backends.registry import same_backend
from ..etcd.registry import SubnetEvent
from ..subnet.lease import Lease
from .lease_keeper import LeaseKeeper
from .logs import RepeatingErrors
from .notify import Notifier
from .peers import PeerCache, PeerChange

log = logging.getLogger("flannel-agent")
_DONE = {"add": "added", "remove": "removed", "update": "updated"}


class PeerProgrammer:
    def __init__(self, backend: Backend, keeper: LeaseKeeper, notifier: Notifier, errors: RepeatingErrors,
                 status: Callable[[], str]) -> None:
        self.backend = backend
        self._keeper = keeper  # our lease and what we publish
        self._notifier = notifier
        self._errors = errors
        self._status = status
        self.peers = PeerCache(self.is_peer)

    def is_peer(self, lease: Lease) -> bool:
        """Not our own lease or PublicIP, and the backend we speak."""
        ours = self._keeper.attrs
        if lease.key == self._keeper.own.key or lease.attrs.public_ip == ours.public_ip:
            return False
        return same_backend(lease.attrs.backend_type, ours.backend_type)

    def apply(self, event: SubnetEvent) -> None:
        if event.error:
            log.warning("lease %s is malformed, treated as absent: %s", event.key, event.error)
        self.program(self.peers.apply(event))

    def resync(self, leases: Iterable[Lease]) -> None:
        self.program(self.peers.resync(leases))

    def program(self, changes: list[PeerChange]) -> None:
        for change in changes:
            lease = change.lease
            where = f"{lease.subnet} at {lease.attrs.public_ip}"
            if change.kind in ("remove", "update"):
                _backend_call("remove", self.backend.remove_peer, change.old or lease, where)
            if change.kind in ("add", "update"):
                _backend_call("add", self.backend.add_peer, lease, where)
            log.info("peer %s: %s", _DONE[change.kind], where)
        if changes:
            self._notifier.status(self._status())

    def reconcile(self) -> None:
        """Drift repair: the backend re-creates what is missing; an error is logged once."""
        try:
            self.backend.reconcile(dict(self.peers.peers))
            self._errors.ok("reconcile")
        except Exception as exc:  # noqa: BLE001 - logged; the next round tries again
            self._errors.failed("reconcile", f"data-plane repair failed: {exc}")


def _backend_call(what: str, call: Callable[[Lease], None], lease: Lease, where: str) -> None:
    try:
        call(lease)
    except Exception as exc:  # noqa: BLE001 - one bad peer must not stop the agent
        log.error("could not %s peer %s: %s (the next repair round retries)", what, where, exc)
