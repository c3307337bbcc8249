"""The other hosts' leases -> the backend: which leases are peers (subnet/peer_rules.py
decides; a rejected lease is logged once with its reason and counted), and the calls that
program them. One peer the backend fails on is logged and skipped; the next repair round
retries it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from ..backends.base import Backend
from ..errors import named
from ..etcd.registry import SubnetEvent
from ..subnet.lease import Lease
from ..subnet.peer_rules import PeerRules
from .logs import RepeatingErrors
from .notify import Notifier
from .peers import PeerCache, PeerChange

log = logging.getLogger("flannel-agent")
_DONE = {"add": "added", "remove": "removed", "update": "updated"}
ONE_BY_ONE = 4  # more changes at once go to the backend as one repair round


class PeerProgrammer:
    def __init__(self, backend: Backend, rules: PeerRules, notifier: Notifier, errors: RepeatingErrors,
                 status: Callable[[], str]) -> None:
        self.backend = backend
        self.rules = rules
        self._notifier = notifier
        self._errors = errors
        self._status = status
        self.peers = PeerCache(rules.select)
        self.malformed: dict[str, str] = {}  # keys holding no lease -> why
        self._reported: dict[str, str] = {}  # what was last logged per key (logged once)
        self.rounds = 0  # repair rounds run (the timer's and the bursts')
        self.repairs = 0  # what the timer's rounds found missing or wrong and wrote (drift)

    def apply(self, events: Iterable[SubnetEvent]) -> None:
        """A batch of watch events on other hosts' keys; one re-selection for all of them."""
        events = list(events)
        for event in events:
            if event.kind == "put" and event.lease is None:
                self.malformed[event.key] = event.error or "no lease"
            else:
                self.malformed.pop(event.key, None)
        self._program(self.peers.apply_all(events))

    def resync(self, leases: Iterable[Lease], malformed: dict[str, str]) -> None:
        self.malformed = dict(malformed)
        self._program(self.peers.resync(leases))

    def stats(self) -> dict[str, Any]:
        """/stats "leases": how many peers are programmed, and which keys were turned away, why."""
        return {"leases": {"peers": len(self.peers.peers), "rejected": dict(self.peers.rejected),
                           "malformed": dict(self.malformed)}}

    def counts(self) -> dict[str, int]:
        """/metrics: how many leases are in each state (exported.PEER_STATES)."""
        return {"programmed": len(self.peers.peers), "rejected": len(self.peers.rejected),
                "malformed": len(self.malformed)}

    def _program(self, changes: list[PeerChange]) -> None:
        self._report()
        self.program(changes)

    def _report(self) -> None:
        """Log each rejected or malformed key once per reason, and when it is accepted again."""
        now = {**{key: f"malformed: {why}" for key, why in self.malformed.items()},
               **{key: f"rejected: {why}" for key, why in self.peers.rejected.items()}}
        for key, why in now.items():
            if self._reported.get(key) != why:
                log.warning("lease %s %s", named(key), why)
        for key in set(self._reported) - set(now):
            if key in self.peers.peers:
                log.info("lease %s is accepted now", key)
        self._reported = now

    def program(self, changes: list[PeerChange]) -> None:
        """A few changes one by one; more (a listing, a burst of watch events) as one
        repair round over all peers, which costs one dump per table and one batch of
        writes however many there are."""
        if len(changes) > ONE_BY_ONE:
            self.reconcile(drift=False)
        for change in changes:
            lease = change.lease
            where = f"{lease.subnet} at {lease.attrs.public_ip}"
            if len(changes) <= ONE_BY_ONE:
                self._one(change, where)
            log.info("peer %s: %s", _DONE[change.kind], where)
        if changes:
            self._notifier.status(self._status())

    def _one(self, change: PeerChange, where: str) -> None:
        if change.kind in ("remove", "update"):
            _backend_call("remove", self.backend.remove_peer, change.old or change.lease, where)
        if change.kind in ("add", "update"):
            _backend_call("add", self.backend.add_peer, change.lease, where)

    def reconcile(self, drift: bool = True) -> None:
        """Drift repair: the backend re-creates what is missing; an error is logged once.
        What a burst's round writes is the burst's changes, not drift: only the timer's
        rounds (`drift`) count their writes as repairs."""
        self.rounds += 1
        try:
            written = self.backend.reconcile(dict(self.peers.peers))
            self._errors.ok("reconcile")
            if drift and written:
                self.repairs += written
        except Exception as exc:  # noqa: BLE001 - logged; the next round tries again
            self._errors.failed("reconcile", f"data-plane repair failed: {exc}")


def _backend_call(what: str, call: Callable[[Lease], None], lease: Lease, where: str) -> None:
    try:
        call(lease)
    except Exception as exc:  # noqa: BLE001 - one bad peer must not stop the agent
        log.error("could not %s peer %s: %s (the next repair round retries)", what, where, exc)
