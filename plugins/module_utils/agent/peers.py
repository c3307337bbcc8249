"""The peer cache: the other hosts' leases as last seen, fed by listings and watch events.

etcd's DELETE events carry no value, so tearing a peer down needs what was cached for its
key. After a compaction the watch cannot resume; a fresh listing is diffed against the
cache instead. Every method returns the changes the data plane must follow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..etcd.registry import SubnetEvent
from ..subnet.lease import Lease
from ..subnet.peer_rules import Selection


@dataclass(frozen=True)
class PeerChange:
    kind: str  # "add", "remove" or "update"
    lease: Lease  # the new lease ("add", "update") or the one that went ("remove")
    old: Lease | None = None  # "update": what was programmed before


Select = Callable[[Iterable[Lease]], Selection]  # PeerRules.select, or a test's own rule


class PeerCache:
    """Every lease seen (but malformed ones) by key, and the peers `select` accepts among them.

    Acceptance depends on the other leases (the older of two conflicting ones wins), so each
    change re-selects over all of them and the data plane follows the difference: a lease
    whose older rival went is added then."""

    def __init__(self, select: Select) -> None:
        self.select = select
        self.known: dict[str, Lease] = {}
        self.peers: dict[str, Lease] = {}  # accepted, programmed
        self.rejected: dict[str, str] = {}  # key -> why

    def apply(self, event: SubnetEvent) -> list[PeerChange]:
        """A watch event. A malformed value counts as the key holding no lease."""
        return self.apply_all([event])

    def apply_all(self, events: Iterable[SubnetEvent]) -> list[PeerChange]:
        """Several watch events (a batch), then one re-selection."""
        for event in events:
            if event.kind == "put" and event.lease is not None:
                self.known[event.key] = event.lease
            else:
                self.known.pop(event.key, None)
        return self._reselect()

    def resync(self, leases: Iterable[Lease]) -> list[PeerChange]:
        """A complete listing: add the new, remove the vanished, update the changed."""
        self.known = {lease.key: lease for lease in leases}
        return self._reselect()

    def _reselect(self) -> list[PeerChange]:
        selection = self.select(self.known.values())
        self.rejected = selection.rejected
        changes = [PeerChange("remove", old) for key, old in self.peers.items() if key not in selection.accepted]
        for key, lease in selection.accepted.items():
            old = self.peers.get(key)
            if old is None:
                changes.append(PeerChange("add", lease))
            elif old is not lease and (old.attrs != lease.attrs or old.subnet != lease.subnet):
                changes.append(PeerChange("update", lease, old))
        self.peers = dict(selection.accepted)  # the newest etcd lease id / revision either way
        return changes


def select_where(accepts: Callable[[Lease], bool]) -> Select:
    """A selection by a rule on each lease alone (no conflicts between leases)."""
    def select(leases: Iterable[Lease]) -> Selection:
        selection = Selection()
        for lease in leases:
            if accepts(lease):
                selection.accepted[lease.key] = lease
        return selection
    return select
