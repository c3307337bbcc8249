"""The vxlan backend (flannel's default): device flannel.<VNI>, UDP port 8472.

Only the facts live here (imported by the config model and the modules); the netlink code
is in backend.py, loaded by the registry when an agent needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..spec import BackendSpec, ConfigField
from .mac import vtep_mac

if TYPE_CHECKING:
    from ...subnet.config import BackendConfig

# outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
OVERHEAD = 50


def backend_data(vni: int, mac: str) -> dict[str, Any]:
    """A vxlan lease's BackendData, as flanneld writes it."""
    return {"VNI": vni, "VtepMAC": mac}


def lease_data(backend: BackendConfig, public_ip: str) -> dict[str, Any]:
    """What an agent will advertise: the VTEP MAC is derived from stable host data, so a
    lease taken by the module is complete before the agent runs."""
    return backend_data(backend.vni, vtep_mac(backend.vni, public_ip))


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
)
