"""What every data-plane backend offers the agent."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol, Self

from ..deps import netaddr
from ..subnet.config import NetworkConfig
from ..subnet.lease import Lease
from ..subnet.peer_rules import PeerRules
from .spec import BackendRuntime


@dataclass(frozen=True)
class LocalHost:
    """This host, as the backend needs to know it."""

    public_ip: str  # underlay address other hosts reach us on
    iface: str  # underlay interface name
    iface_index: int
    iface_mtu: int
    netns: str | None = None  # pyroute2 netns name for tests; None = current namespace


@dataclass(frozen=True)
class BackendSetup:
    """What setup() returns: data for this host's lease and the overlay MTU."""

    backend_type: str
    backend_data: dict[str, Any] | None
    mtu: int


class KernelBackend:
    """What the backends that only program the kernel (vxlan, host-gw) share: the config and
    host they are bound to, one lock around every netlink conversation, our subnet."""

    def __init__(self, config: NetworkConfig, host: LocalHost) -> None:
        self._config = config
        self._host = host
        self._lock = threading.Lock()
        self._own_subnet: netaddr.IPNetwork | None = None
        self._rules: PeerRules | None = None

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
            self._host = host


class Backend(Protocol):
    """Programs the data plane for one host. All methods are idempotent."""

    @classmethod
    def create(cls, config: NetworkConfig, host: LocalHost, runtime: BackendRuntime) -> Backend:
        """The backend bound to this host; nothing is set up yet (the registry calls this)."""

    def setup(self, config: NetworkConfig, host: LocalHost) -> BackendSetup:
        """Create/adjust this host's devices; return this host's lease data and MTU."""

    def activate(self, own_subnet: netaddr.IPNetwork) -> None:
        """Called once the lease is known (e.g. to address flannel.<VNI> / flannel0)."""

    def add_peer(self, lease: Lease) -> None:
        """Program (or re-program) everything needed to reach lease.subnet."""

    def remove_peer(self, lease: Lease) -> None:
        """Remove what add_peer programmed for this lease."""

    def reconcile(self, peers: dict[str, Lease]) -> None:
        """Re-create anything missing/changed (drift repair); peers keyed by lease.key."""

    def close(self) -> None:
        """Stop threads/sockets; leave routes, devices and FDB in place."""
