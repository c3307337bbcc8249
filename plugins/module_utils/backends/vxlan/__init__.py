"""The vxlan backend (flannel's default): device flannel.<VNI>, UDP port 8472.

Only the facts live here (imported by the config model and the modules); the netlink code
is in backend.py, loaded by the registry when an agent needs it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ...errors import shown
from ..spec import BackendSpec, ConfigField, OwnDevice
from .mac import vtep_mac

if TYPE_CHECKING:
    from ...subnet.config import BackendConfig

# outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
OVERHEAD = 50
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def backend_data(vni: int, mac: str) -> dict[str, Any]:
    """A vxlan lease's BackendData, as flanneld writes it."""
    return {"VNI": vni, "VtepMAC": mac}


def lease_data(backend: BackendConfig, public_ip: str) -> dict[str, Any]:
    """What an agent will advertise: the VTEP MAC is derived from stable host data, so a
    lease taken by the module is complete before the agent runs."""
    return backend_data(backend.vni, vtep_mac(backend.vni, public_ip))


def _field(data: dict[str, Any] | None, name: str) -> Any:
    """A BackendData field; keys are matched case-insensitively, as Go's encoding/json does."""
    return next((v for k, v in (data or {}).items() if str(k).lower() == name.lower()), None)


def vtep_mac_of(data: dict[str, Any] | None) -> str | None:
    """A peer's VtepMAC, lowercase, when it is a MAC address."""
    mac = _field(data, "VtepMAC")
    if not isinstance(mac, str) or not _MAC.match(mac.strip().lower()):
        return None
    return mac.strip().lower()


def check_peer_data(data: dict[str, Any] | None, backend: BackendConfig) -> str | None:
    """A unicast, non-zero VtepMAC and our VNI: anything else would become a flood entry
    (00:00:00:00:00:00), hit a multicast group, or never reach the peer's device."""
    mac = vtep_mac_of(data)
    if mac is None:
        return f"its BackendData has no VtepMAC MAC address: {shown(data)}"
    if mac == "00:00:00:00:00:00" or int(mac[:2], 16) & 1:
        return f"its VtepMAC {mac} is not a unicast MAC address"
    vni = _field(data, "VNI")
    if isinstance(vni, bool) or vni != backend.vni:
        return f"its VNI {shown(vni)} is not this network's VNI {backend.vni}"
    return None


def device_name(backend: BackendConfig) -> str:
    return f"flannel.{backend.vni}"


def direct_routing(backend: BackendConfig) -> bool:
    return backend.direct_routing


def peer_identities(data: dict[str, Any] | None) -> tuple[str, ...]:
    mac = vtep_mac_of(data)
    return (f"VtepMAC {mac}",) if mac is not None else ()


SPEC = BackendSpec(
    type="vxlan",
    implementation="backend:VxlanBackend",
    fields={
        "VNI": ConfigField(int, 1, 0, 16777215),
        "Port": ConfigField(int, 8472, 0, 65535, "0: the default"),
        "GBP": ConfigField(bool, False),
        "DirectRouting": ConfigField(bool, False),
        "Learning": ConfigField(bool, False),
        "MTU": ConfigField(int, None, 0, 65535),
        "MacPrefix": ConfigField(str),
    },
    overhead=OVERHEAD,
    lease_type="vxlan",
    mtu_field="MTU",
    module_lease_data=lease_data,
    check_peer_data=check_peer_data,
    peer_identities=peer_identities,
    device=OwnDevice(("vxlan",), r"flannel\.[0-9]+", device_name),
    routes_via_underlay=direct_routing,  # DirectRouting: peers on our link are routed directly
    live_fields=frozenset({"DirectRouting"}),  # only the peers' routes change: a repair round applies it
)
