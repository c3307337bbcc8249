"""What every data-plane backend offers the agent."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, Self, TypeVar

from ..deps import netaddr
from ..errors import HostNetworkError
from ..host import rtnl
from ..host.kernel_changes import FULL_ROUND_EVERY, KernelChanges
from ..subnet.config import NetworkConfig
from ..subnet.lease import Lease
from ..subnet.peer_rules import PeerRules
from .peer_table import Batch, PeerPlan, Tables
from .spec import BackendRuntime

_T = TypeVar("_T")


@dataclass(frozen=True)
class LocalHost:
    """This host, as the backend needs to know it."""

    public_ip: str  # underlay address other hosts reach us on (advertised in the lease)
    iface: str  # underlay interface name
    iface_index: int
    iface_mtu: int
    netns: str | None = None  # pyroute2 netns name for tests; None = current namespace
    local_ip: str = ""  # the interface's own address, where it differs (--public-ip behind NAT)

    @property
    def source_ip(self) -> str:
        """Where our encapsulated traffic leaves from and the udp socket is bound: the
        interface's address (upstream's IfaceAddr), not a public IP another box maps to us."""
        return self.local_ip or self.public_ip


@dataclass(frozen=True)
class BackendSetup:
    """What setup() returns: data for this host's lease and the overlay MTU."""

    backend_type: str
    backend_data: dict[str, Any] | None
    mtu: int


class KernelBackend:
    """What the backends that only program the kernel (vxlan, host-gw) share: the config and
    host they are bound to, one lock around every netlink conversation, our subnet, the
    rtnetlink socket the peer tables are read and written through, each peer's plan (kept
    while its lease and our setup stay the same, so a repair round judges no lease again),
    and the kernel's change notifications that let a repair round with nothing to repair be
    skipped (host/kernel_changes.py)."""

    def __init__(self, config: NetworkConfig, host: LocalHost) -> None:
        self._config = config
        self._host = host
        self._lock = threading.Lock()
        self._own_subnet: netaddr.IPNetwork | None = None
        self._rules: PeerRules | None = None
        self._rtnl: rtnl.Rtnl | None = None
        self._plans: dict[str, tuple[Lease, int | None, PeerPlan | None]] = {}
        self._written = 0  # requests sent to the kernel so far; reconcile() returns its share
        self._changes: KernelChanges | None = None
        self._clean: dict[str, Lease] | None = None  # the peers of the last full round without errors
        self._full_at = 0.0  # monotonic start of that round
        self._round_started = 0.0  # monotonic start of the full round under way

    def _tables(self, index: int | None) -> Tables:
        """One dump of each table (under the lock)."""
        return self._netlink(lambda rt: Tables.read(rt, index))

    def _write(self, requests: list[rtnl.Request]) -> list[str]:
        """Send the requests as one batch; the failures, one line each (under the lock)."""
        if not requests:
            return []
        self._written += len(requests)
        errors = self._netlink(lambda rt: rt.run(requests))
        if errors:
            self._clean = None
        self._note_changes(after_own_write=True)  # the notifications our batch caused are ours
        return errors

    def _netlink(self, work: Callable[[rtnl.Rtnl], _T]) -> _T:
        if self._rtnl is None:
            self._rtnl = rtnl.Rtnl(self._host.netns)
        try:
            return work(self._rtnl)
        except HostNetworkError:
            self._close_netlink()  # a socket with lost answers is not used again
            raise

    def _close_netlink(self) -> None:
        """Close both sockets; the next round starts from a full one."""
        self._clean = None
        if self._rtnl is not None:
            self._rtnl.close()
            self._rtnl = None
        if self._changes is not None:
            self._changes.close()
            self._changes = None

    # ---- skipping repair rounds with nothing to repair -----------------------------------

    def _note_changes(self, after_own_write: bool = False) -> None:
        if self._changes is not None:
            try:
                self._changes.note(self._rtnl.portid if self._rtnl else 0, after_own_write)
            except HostNetworkError:
                self._changes.close()
                self._changes = None
                self._clean = None

    def _at_rest(self, peers: dict[str, Lease]) -> bool:
        """True when a repair round can find nothing to repair (under the lock): the last
        full round, less than FULL_ROUND_EVERY ago, was for these peers and ended clean, and
        the kernel notified no change by anyone else since. Without a subscription (it could
        not be opened) every round is a full one. When not at rest, the round that follows
        is a full one: what was notified so far is what it repairs, and whatever is notified
        from now on makes the next round a full one too."""
        if self._changes is None:
            try:
                self._changes = KernelChanges(self._host.netns)
            except HostNetworkError:
                return False
        self._note_changes()
        changes = self._changes
        if (changes is not None and not changes.pending and self._clean is not None
                and time.monotonic() - self._full_at < FULL_ROUND_EVERY and self._clean == peers):
            return True
        self._clean = None  # a round that raises leaves no baseline
        if changes is not None:
            changes.pending = False
        self._round_started = time.monotonic()
        return False

    def _full_round_done(self, peers: dict[str, Lease], errors: list[str]) -> None:
        """A full round (the one `_at_rest` last said to run) that ended without errors is the
        baseline later rounds are skipped against, until FULL_ROUND_EVERY after its start."""
        self._clean = None if errors else dict(peers)
        self._full_at = self._round_started

    def _plan_of(self, key: str, lease: Lease, index: int | None, make: Callable[[], PeerPlan | None],
                 keep: bool = True) -> PeerPlan | None:
        """The plan of peer `key`: the kept one while the lease and the device index are the
        same, else make() (kept unless `keep` is False: a plan that depends on more than the
        lease)."""
        hit = self._plans.get(key)
        if hit is not None and (hit[0] is lease or hit[0] == lease) and hit[1] == index:
            return hit[2]
        plan = make()
        if keep:
            self._plans[key] = (lease, index, plan)
        return plan

    def _program_peers(self, peers: dict[str, Lease], index: int | None,
                       plan_of: Callable[[str, Lease], PeerPlan | None],
                       label: Callable[[Lease], str], stale: bool,
                       error_of: Callable[[Lease, HostNetworkError], str]) -> list[str]:
        """Program `peers` from one dump of each table, as one batch; with `stale`, `peers` are
        all of them and what none needs is removed. Returns the errors, one per failed peer
        or object (the others are programmed all the same)."""
        batch = Batch(self._tables(index), index)
        errors: list[str] = []
        plans: list[PeerPlan] = []
        for key, lease in peers.items():
            try:
                plan = plan_of(key, lease)
            except HostNetworkError as exc:
                errors.append(error_of(lease, exc))
                continue
            if plan is not None:
                plans.append(plan)
                batch.program(plan, partial(label, lease))
        if stale:
            self._forget_plans(peers)
            batch.remove_stale(plans)
        if errors:
            self._clean = None
        return errors + self._write(batch.requests)

    def _forget_plans(self, keys: Iterable[str] | None = None) -> None:
        """Drop the kept plans: all (setup/activate changed what they depend on), or all
        but those of `keys` (the current peers)."""
        if keys is None:
            self._plans.clear()
            self._clean = None
            return
        self._plans = {key: self._plans[key] for key in keys if key in self._plans}

    @classmethod
    def create(cls, config: NetworkConfig, host: LocalHost, runtime: BackendRuntime) -> Self:
        return cls(config, host)  # nothing of the runtime is needed: the kernel keeps the state

    def _rejects(self, lease: Lease) -> str | None:
        """Why the lease must not reach the kernel (the agent already filters; callers that
        drive a backend directly are held to the same rules)."""
        self._rules = PeerRules.cached(self._rules, self._config, self._own_subnet, self._host.public_ip,
                                       self._config.backend.spec.lease_type, self._own_backend_data())
        return self._rules.check(lease)

    def _own_backend_data(self) -> dict[str, Any] | None:
        """What this host's own lease carries in BackendData (the peers may not claim it)."""
        return None

    def _rebind(self, config: NetworkConfig | None, host: LocalHost | None) -> None:
        """setup() again with a new config or host (under the lock)."""
        if config is not None:
            self._config = config
        if host is not None:
            if host.netns != self._host.netns:
                self._close_netlink()
            self._host = host
        self._forget_plans()


class Backend(Protocol):
    """Programs the data plane for one host. All methods are idempotent."""

    @classmethod
    def create(cls, config: NetworkConfig, host: LocalHost, runtime: BackendRuntime) -> Backend:
        """The backend bound to this host; nothing is set up yet (the registry calls this)."""

    def setup(self, config: NetworkConfig | None = None, host: LocalHost | None = None) -> BackendSetup:
        """Create/adjust this host's devices; return this host's lease data and MTU. Called
        again with a new config when only its SPEC.live_fields changed."""

    def activate(self, own_subnet: netaddr.IPNetwork) -> None:
        """Called once the lease is known (e.g. to address flannel.<VNI> / flannel0)."""

    def add_peer(self, lease: Lease) -> None:
        """Program (or re-program) everything needed to reach lease.subnet."""

    def remove_peer(self, lease: Lease) -> None:
        """Remove what add_peer programmed for this lease."""

    def reconcile(self, peers: dict[str, Lease]) -> int | None:
        """Re-create anything missing/changed (drift repair); peers keyed by lease.key.
        Returns how many things it had to write or re-create (the agent's repairs metric);
        None: the backend does not count them."""

    def close(self) -> None:
        """Stop threads/sockets; leave routes, devices and FDB in place."""
