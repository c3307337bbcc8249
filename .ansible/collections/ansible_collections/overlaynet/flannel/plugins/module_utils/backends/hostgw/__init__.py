"""The host-gw backend: no device, a route per peer via its PublicIP (peers on our L2 link).

Only the facts live here; the netlink code is in backend.py, loaded on demand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..spec import BackendSpec

if TYPE_CHECKING:
    from ...subnet.config import BackendConfig


def _always(_backend: BackendConfig) -> bool:
    return True


SPEC = BackendSpec(
    type="host-gw",
    implementation="backend:HostGwBackend",
    overhead=0,
    lease_type="host-gw",
    needs_l2_adjacency=True,
    routes_via_underlay=_always,
)
