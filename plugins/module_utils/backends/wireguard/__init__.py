"""The wireguard backend (upstream flannel's format): device flannel-wg, UDP port 51820.

Only the facts live here; the device code (the kernel's wireguard over generic netlink, or
wireguard-go over its UAPI socket) is in backend.py and its helpers, loaded on demand.
Leases carry ``BackendType: "wireguard"`` and ``BackendData: {"PublicKey": ..., "Port": ...}``
(upstream writes only PublicKey and reaches every peer on its own ListenPort; so do we when
a peer's lease has no Port). ``flannel-wg-v6`` (Mode separate with IPv6) is reserved for the
dual-stack work: such configs are refused with a clear error until then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import shown
from ..spec import BackendSpec, ConfigField, OwnDevice
from .key_text import key_bytes, key_problem

if TYPE_CHECKING:
    from ...subnet.config import BackendConfig, NetworkConfig

# outer IPv6 40 + UDP 8 + WireGuard header 16 + auth tag 16, as upstream (room for an IPv6 underlay)
OVERHEAD = 80
DEVICE = "flannel-wg"
DEVICE_V6 = "flannel-wg-v6"
MODES = ("separate", "auto", "ipv4", "ipv6")


def _mode_problem(value: Any) -> str | None:
    return None if value in MODES else f"is not a wireguard Mode; use one of {', '.join(MODES)}"


def backend_data(public_key: str, port: int) -> dict[str, Any]:
    """A wireguard lease's BackendData (upstream reads PublicKey; Port is ours, ignored there)."""
    return {"PublicKey": public_key, "Port": port}


def _field(data: dict[str, Any] | None, name: str) -> Any:
    """A BackendData field; keys are matched case-insensitively, as Go's encoding/json does."""
    return next((v for k, v in (data or {}).items() if str(k).lower() == name.lower()), None)


def public_key_of(data: dict[str, Any] | None) -> str | None:
    """A peer's PublicKey when it is a WireGuard key (base64, 32 bytes)."""
    key = _field(data, "PublicKey")
    return key.strip() if key_bytes(key) is not None else None


def peer_port(data: dict[str, Any] | None, backend: BackendConfig) -> int:
    """The port a peer listens on: its lease's Port, else our ListenPort (as upstream)."""
    port = _field(data, "Port")
    if isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535:
        return port
    return int(backend.get("ListenPort"))


def check_peer_data(data: dict[str, Any] | None, _backend: BackendConfig) -> str | None:
    """A PublicKey that is a WireGuard key, and a Port (when given) that is a UDP port."""
    if public_key_of(data) is None:
        return f"its BackendData has no WireGuard PublicKey (32 bytes, base64): {shown(data)}"
    port = _field(data, "Port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
        return f"its BackendData Port {shown(port)} is not a UDP port (1..65535)"
    return None


def peer_identities(data: dict[str, Any] | None) -> tuple[str, ...]:
    """WireGuard peers are keyed by public key: a second lease with the same key would take
    the first one's AllowedIPs over, so the older keeps it."""
    key = public_key_of(data)
    return (f"PublicKey {key}",) if key is not None else ()


def config_problem(config: NetworkConfig) -> str | None:
    """IPv6 over wireguard (flannel-wg-v6, Mode ipv6's IPv6 endpoints) waits for dual stack."""
    if config.ipv6 is not None:
        return ("the wireguard backend does not run IPv6 yet (flannel-wg-v6); "
                "set EnableIPv6 false or use the vxlan backend for dual stack")
    if config.backend.get("Mode") == "ipv6":
        return ("wireguard Mode ipv6 (tunnels over the peers' PublicIPv6) is not supported yet; "
                "use Mode separate, auto or ipv4")
    return None


def device_name(_backend: BackendConfig) -> str:
    return DEVICE


SPEC = BackendSpec(
    type="wireguard",
    implementation="backend:WireguardBackend",
    fields={
        "ListenPort": ConfigField(int, 51820, 1, 65535),
        "ListenPortV6": ConfigField(int, 51821, 1, 65535),
        "PSK": ConfigField(str, valid=key_problem, secret=True),
        "PersistentKeepaliveInterval": ConfigField(int, 0, 0, 65535, "seconds; 0: off"),
        "Mode": ConfigField(str, "separate", valid=_mode_problem),
    },
    overhead=OVERHEAD,
    lease_type="wireguard",
    check_peer_data=check_peer_data,
    peer_identities=peer_identities,
    # The kernel's device is of kind wireguard; wireguard-go's is a TUN device.
    device=OwnDevice(("wireguard", "tun"), r"flannel-wg(-v6)?", device_name),
    config_problem=config_problem,
)
