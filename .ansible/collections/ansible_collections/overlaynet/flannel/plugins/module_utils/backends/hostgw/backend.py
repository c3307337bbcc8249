"""The host-gw backend: no device, one route per remote lease via the peer's public IP.

    route <remote subnet> via <PublicIP> dev <underlay>   (proto RTPROT_OVERLAYNET)

This only works when every peer is on our underlay link (L2 adjacency): the kernel will not
use a gateway it cannot reach directly. add_peer() checks that first and raises a
HostNetworkError naming the peer; the agent logs it and goes on with the other peers.
"""

from __future__ import annotations

import logging

from ...deps import netaddr
from ...errors import HostNetworkError
from ...host import netlink as nl
from ...subnet.config import NetworkConfig
from ...subnet.lease import Lease
from ..base import BackendSetup, KernelBackend, LocalHost
from . import SPEC

log = logging.getLogger(__name__)


class HostGwBackend(KernelBackend):
    """flannel's host-gw backend for one host. Thread-safe."""

    # ---- Backend protocol ------------------------------------------------------------------

    def setup(self, config: NetworkConfig | None = None, host: LocalHost | None = None) -> BackendSetup:
        """Nothing to create; checks the underlay interface exists. MTU = underlay MTU."""
        with self._lock:
            self._rebind(config, host)
            with nl.open_ipr(self._host.netns) as ipr:
                self._check_underlay(ipr)
        return BackendSetup(SPEC.lease_type, None, SPEC.overlay_mtu(self._config.backend, self._host.iface_mtu))

    def activate(self, own_subnet: netaddr.IPNetwork) -> None:
        self._own_subnet = netaddr.IPNetwork(own_subnet).cidr

    def add_peer(self, lease: Lease) -> None:
        """Route the peer's subnet via its PublicIP. Raises HostNetworkError when the peer is
        not on a directly connected subnet of the underlay interface. Leases of another
        backend type, and our own, are skipped (as flanneld does)."""
        with self._lock, nl.open_ipr(self._host.netns) as ipr:
            route = self._plan(ipr, lease, nl.ipv4_addresses(ipr, self._host.iface_index))
            if route is not None:
                self._ensure(ipr, lease, route)

    def remove_peer(self, lease: Lease) -> None:
        """Delete our route to the lease's subnet (routes of other owners stay)."""
        with self._lock, nl.open_ipr(self._host.netns) as ipr:
            nl.delete_route(ipr, lease.subnet.cidr)

    def reconcile(self, peers: dict[str, Lease]) -> None:
        """Re-create missing/changed routes and delete our routes no current peer needs.
        Peers that cannot be routed are reported together in one HostNetworkError at the end,
        after all the others were programmed."""
        errors: list[str] = []
        with self._lock, nl.open_ipr(self._host.netns) as ipr:
            self._check_underlay(ipr)
            routes = nl.main_routes(ipr)
            underlay_nets = nl.ipv4_addresses(ipr, self._host.iface_index)
            wanted: set[netaddr.IPNetwork] = set()
            for lease in peers.values():
                try:
                    route = self._plan(ipr, lease, underlay_nets)
                    if route is None:
                        continue
                    wanted.add(route.dst)
                    self._ensure(ipr, lease, route, routes)
                except HostNetworkError as exc:
                    errors.append(str(exc))
            for dst, route in routes.items():  # ours (by protocol), wherever they point
                if route.proto == nl.RTPROT_OVERLAYNET and dst not in wanted:
                    nl.delete_route(ipr, dst)
        if errors:
            raise HostNetworkError("; ".join(errors))

    def close(self) -> None:
        """Nothing to stop; routes stay so traffic survives an agent restart."""

    # ---- internals -------------------------------------------------------------------------

    def _check_underlay(self, ipr: nl.IPRouteAPI) -> None:
        if nl.get_link(ipr, self._host.iface_index) is None:
            raise HostNetworkError(
                f"underlay interface {self._host.iface} (index {self._host.iface_index}) does not exist; "
                "restart the agent so it finds the interface again")

    def _plan(self, ipr: nl.IPRouteAPI, lease: Lease, underlay_nets: list[netaddr.IPNetwork]) -> nl.Route | None:
        attrs = lease.attrs
        reason = self._rejects(lease)
        if reason is not None:
            log.debug("host-gw: skipping lease %s: %s", lease.key, reason)
            return None
        if not nl.directly_connected(ipr, attrs.public_ip, self._host.iface_index, underlay_nets):
            nets = ", ".join(str(n.cidr) for n in underlay_nets) or "no IPv4 subnet"
            raise HostNetworkError(
                f"host-gw peer {lease.key}: PublicIP {attrs.public_ip} is not on a directly connected "
                f"subnet of {self._host.iface} ({nets}); host-gw needs L2 adjacency; use vxlan")
        return nl.Route(lease.subnet.cidr, attrs.public_ip, self._host.iface_index)

    @staticmethod
    def _ensure(ipr: nl.IPRouteAPI, lease: Lease, route: nl.Route, routes: dict | None = None) -> None:
        try:
            nl.ensure_route(ipr, route, routes)
        except HostNetworkError as exc:
            raise HostNetworkError(f"host-gw peer {lease.key} ({lease.attrs.public_ip}): {exc}") from None
