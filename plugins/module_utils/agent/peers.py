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


@dataclass(frozen=True)
class PeerChange:
    kind: str  # "add", "remove" or "update"
    lease: Lease  # the new lease ("add", "update") or the one that went ("remove")
    old: Lease | None = None  # "update": what was programmed before


class PeerCache:
    """Peers keyed by lease key. `accepts` decides which leases are peers at all
    (not our own lease, the backend type we speak)."""

    def __init__(self, accepts: Callable[[Lease], bool]) -> None:
        self.accepts = accepts
        self.peers: dict[str, Lease] = {}

    def apply(self, event: SubnetEvent) -> list[PeerChange]:
        """A watch event. A malformed value counts as the key holding no lease."""
        if event.kind == "put" and event.lease is not None:
            return self._set(event.key, event.lease)
        return self._drop(event.key)

    def resync(self, leases: Iterable[Lease]) -> list[PeerChange]:
        """A complete listing: add the new, remove the vanished, update the changed."""
        current = {lease.key: lease for lease in leases}
        changes = [change for key in list(self.peers) if key not in current for change in self._drop(key)]
        for key, lease in current.items():
            changes += self._set(key, lease)
        return changes

    def _set(self, key: str, lease: Lease) -> list[PeerChange]:
        if not self.accepts(lease):
            return self._drop(key)
        old = self.peers.get(key)
        self.peers[key] = lease  # keep the newest etcd lease id / revision either way
        if old is None:
            return [PeerChange("add", lease)]
        if old.attrs != lease.attrs or old.subnet != lease.subnet:
            return [PeerChange("update", lease, old)]
        return []

    def _drop(self, key: str) -> list[PeerChange]:
        old = self.peers.pop(key, None)
        return [PeerChange("remove", old)] if old is not None else []
