"""What another backend of ours left on this host, removed before the configured one starts.

After a backend switch (udp -> vxlan, vxlan -> host-gw, a new VNI ...) the old backend's
device would stay (flannel0 holds the whole Network's route; flannel.<old VNI> keeps its
FDB and neighbours) and its routes would shadow the new backend's. The facts come from the
SPECs: each backend names the device it creates (``SPEC.device``) and whether its routes go
out of the underlay (``SPEC.routes_via_underlay``). Everything of the *configured* backend
stays, so a restart on the same config changes nothing and loses no packet.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from ..host import netlink as nl
from .registry import SPECS, spec_for
from .spec import BackendSpec

if TYPE_CHECKING:
    from ..subnet.config import NetworkConfig

log = logging.getLogger(__name__)


def _owner(kind: str, name: str) -> BackendSpec | None:
    """The backend of ours that creates a device of this kind and name, if any."""
    for spec in SPECS.values():
        if spec.device is not None and kind in spec.device.kinds and re.fullmatch(spec.device.pattern, name):
            return spec
    return None


def remove_leftovers(ipr: nl.IPRouteAPI, config: NetworkConfig, underlay_index: int) -> list[str]:
    """Delete other backends' devices, then routes of ours (RTPROT_OVERLAYNET) that leave
    through a device the configured backend does not use; what was removed, for the log."""
    spec = spec_for(config.backend.type)
    keep = spec.device.name(config.backend) if spec.device is not None else None
    used = {underlay_index} if spec.routes_via_underlay(config.backend) else set()
    removed: list[str] = []
    for link in nl.dump("links", ipr.get_links):
        name = str(link.get("IFLA_IFNAME") or "")
        owner = _owner(nl.link_kind(link), name)
        if owner is None:
            continue
        if owner is spec and name == keep:
            used.add(int(link["index"]))
            continue
        if nl.delete_link(ipr, int(link["index"]), name):
            removed.append(f"{owner.type} device {name}")
    # After the devices: their routes went with them. What is left via another device
    # (host-gw's routes over the underlay, when the new backend routes through its own) goes.
    for dst, route in nl.main_routes(ipr).items():
        if route.proto == nl.RTPROT_OVERLAYNET and route.oif not in used:
            if nl.delete_route(ipr, dst):
                removed.append(f"route {dst}")
    for what in removed:
        log.info("removed %s, left by another backend (now %s)", what, spec.type)
    return removed
