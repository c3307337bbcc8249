"""The udp backend (the classic set-up): TUN flannel0, UDP port 8285.

Only the facts live here; the TUN, socket and forwarder code (backend.py and its helpers)
is loaded on demand. Upstream's udp leases carry neither BackendType nor BackendData; ours
add the fast-path advertisement when the agent runs (backend.py), never from the module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..spec import BackendSpec, ConfigField, OwnDevice

if TYPE_CHECKING:
    from ...subnet.config import BackendConfig

OVERHEAD = 28  # IPv4 header + UDP header, as flannel
TUN_NAME = "flannel0"  # as upstream: one name, whatever the config


def tun_name(_backend: BackendConfig) -> str:
    return TUN_NAME


SPEC = BackendSpec(
    type="udp",
    implementation="backend:UdpBackend",
    fields={"Port": ConfigField(int, 8285, 0, 65535, "0: the default")},
    overhead=OVERHEAD,
    lease_type="",
    device=OwnDevice(("tun",), TUN_NAME, tun_name),
)
