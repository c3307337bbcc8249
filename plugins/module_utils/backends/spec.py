"""What the engine knows of a backend without loading it: the facts each backend declares.

A backend package (``backends/<name>/__init__.py``) defines one ``SPEC``; ``registry.py``
lists the packages. The config model validates ``Backend`` fields with ``SPEC.fields``, the
lease module writes ``SPEC.lease_type`` and ``SPEC.module_lease_data``, the MTU comes from
``SPEC.overlay_mtu``; the implementation class (netlink, sockets, threads) is imported only
when an agent or a test asks the registry for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..subnet.config import BackendConfig, NetworkConfig


SECRET_SHOWN = "(secret)"  # what logs, /stats and task output show of a secret field


@dataclass(frozen=True)
class ConfigField:
    """One field of the Backend section: its JSON type, default and allowed range."""

    kind: type
    default: Any = None
    low: int | None = None
    high: int | None = None
    hint: str = ""  # appended to a range error, e.g. "0: the default"
    # What else a value must be (None: it is fine; else why not, naming the fix).
    valid: Callable[[Any], str | None] | None = None
    secret: bool = False  # never shown: logs, /stats and task output get a placeholder

    def check(self, name: str, value: Any) -> None:
        shown_value = SECRET_SHOWN if self.secret else repr(value)
        # bool is an int in Python; a JSON true is not a valid VNI.
        if (isinstance(value, bool) and self.kind is not bool) or not issubclass(type(value), self.kind):
            raise ConfigError(f"Backend {name} {shown_value} must be a {self.kind.__name__}")
        if isinstance(value, int) and self.low is not None and self.high is not None \
                and not self.low <= value <= self.high:
            hint = f" ({self.hint})" if self.hint else ""
            raise ConfigError(f"Backend {name} {value} is out of range; use {self.low}..{self.high}{hint}")
        why = self.valid(value) if self.valid is not None else None
        if why is not None:
            raise ConfigError(f"Backend {name} {shown_value} {why}")


def _no_lease_data(_backend: BackendConfig, _public_ip: str) -> dict[str, Any] | None:
    return None


def _any_peer_data(_data: dict[str, Any] | None, _backend: BackendConfig) -> str | None:
    return None


def _no_identities(_data: dict[str, Any] | None) -> tuple[str, ...]:
    return ()


def _not_via_underlay(_backend: BackendConfig) -> bool:
    return False


def _any_network(_config: NetworkConfig) -> str | None:
    return None


@dataclass(frozen=True)
class OwnDevice:
    """The network device a backend creates: its link kind, the names it may have (a
    regular expression, full match) and the name the current config gives it. Another
    backend's agent that finds such a device removes it (backends/leftovers.py)."""

    kinds: tuple[str, ...]  # IFLA_INFO_KIND: ("vxlan",), ("tun",); wireguard's is either of two
    pattern: str
    name: Callable[[BackendConfig], str]


@dataclass(frozen=True)
class BackendRuntime:
    """How the agent runs a backend, beyond the config: what a backend does not need, it ignores."""

    state_dir: str | None = None  # where it may keep state across restarts (None: keep none)
    fast_path: bool = True  # our own faster wire format between our agents, where it has one (udp)


@dataclass(frozen=True)
class BackendSpec:
    type: str  # Backend.Type in the network config
    implementation: str  # "<module>:<class>" inside the backend's package, imported on demand
    fields: Mapping[str, ConfigField] = field(default_factory=dict)  # canonical names
    overhead: int = 0  # bytes the encapsulation takes from the underlay MTU
    lease_type: str = ""  # BackendType its leases carry ("" = none, as upstream's udp)
    needs_l2_adjacency: bool = False  # every peer must be on our underlay link
    mtu_field: str | None = None  # a Backend field that, when set, stands for the underlay MTU (upstream's)
    # What flannel_lease can write before the agent runs (the agent's setup() has the last word).
    module_lease_data: Callable[[BackendConfig, str], dict[str, Any] | None] = _no_lease_data
    # Why a peer's BackendData cannot be programmed (None: it can), given our Backend config.
    check_peer_data: Callable[[dict[str, Any] | None, BackendConfig], str | None] = _any_peer_data
    # What in a peer's BackendData no two peers may share ("VtepMAC 02:..."): the older keeps it.
    peer_identities: Callable[[dict[str, Any] | None], tuple[str, ...]] = _no_identities
    device: OwnDevice | None = None  # the device it creates (host-gw: none)
    # Whether its routes (proto RTPROT_OVERLAYNET) may go out of the underlay interface.
    routes_via_underlay: Callable[[BackendConfig], bool] = _not_via_underlay
    # Backend fields a running agent applies in place (setup() again, then a repair round):
    # a change of only these restarts nothing (agent/config_guard.py).
    live_fields: frozenset[str] = frozenset()
    # Why the whole network config cannot run on this backend (None: it can), e.g. IPv6 not yet.
    config_problem: Callable[[NetworkConfig], str | None] = _any_network

    def default(self, name: str) -> Any:
        known = self.fields.get(name)
        return None if known is None else known.default

    def secrets(self) -> frozenset[str]:
        """The fields never to be shown (wireguard's PSK)."""
        return frozenset(name for name, f in self.fields.items() if f.secret)

    def defaults(self) -> dict[str, Any]:
        return {name: f.default for name, f in self.fields.items() if f.default is not None}

    def overlay_mtu(self, backend: BackendConfig, underlay_mtu: int) -> int:
        """The device's and subnet.env's MTU: the underlay's (or the Backend's MTU field, which
        upstream flannel reads as the underlay MTU) less the encapsulation."""
        explicit = backend.get(self.mtu_field) if self.mtu_field else None
        return (int(explicit) if explicit else underlay_mtu) - self.overhead
