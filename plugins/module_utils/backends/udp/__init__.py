"""The udp backend (the classic set-up): TUN flannel0, UDP port 8285.

Only the facts live here; the TUN, socket and forwarder code (backend.py and its helpers)
is loaded on demand. Upstream's udp leases carry neither BackendType nor BackendData; ours
add the fast-path advertisement when the agent runs (backend.py), never from the module.
"""

from __future__ import annotations

from ..spec import BackendSpec, ConfigField

OVERHEAD = 28  # IPv4 header + UDP header, as flannel

SPEC = BackendSpec(
    type="udp",
    implementation="backend:UdpBackend",
    fields={"Port": ConfigField(int, 8285, 0, 65535, "0: the default")},
    overhead=OVERHEAD,
    lease_type="",
)
