"""The host-gw backend: no device, one route per remote lease via the peer's public IP.

    route <remote subnet> via <PublicIP> dev <underlay>   (proto RTPROT_OVERLAYNET)

This only works when every peer is on our underlay link (L2 adjacency): the kernel will not
use a gateway it cannot reach directly. add_peer() checks that first and raises a
HostNetworkError naming the peer; the agent logs it and goes on with the other peers.
"""

from __future__ import annotations

import logging
from functools import partial

from ...deps import netaddr
from ...errors import HostNetworkError
from ...host import netlink as nl
from ...host.rtnl import RouteSpec
from ...subnet.config import NetworkConfig
from ...subnet.lease import Lease
from ..base import BackendSetup, KernelBackend, LocalHost
from ..peer_table import Batch, PeerPlan
from . import SPEC

log = logging.getLogger(__name__)


class HostGwBackend(KernelBackend):
    """flannel's host-gw backend for one host. Thread-safe."""

    def __init__(self, config: NetworkConfig, host: LocalHost) -> None:
        super().__init__(config, host)
        self._underlay: tuple[object, ...] = ()  # what the kept plans' adjacency was judged on

    # ---- Backend protocol ------------------------------------------------------------------

    def setup(self, config: NetworkConfig | None = None, host: LocalHost | None = None) -> BackendSetup:
        """Nothing to create; checks the underlay interface exists. MTU = underlay MTU."""
        with self._lock:
            self._rebind(config, host)
            with nl.open_ipr(self._host.netns) as ipr:
                self._check_underlay(ipr)
        return BackendSetup(SPEC.lease_type, None, SPEC.overlay_mtu(self._config.backend, self._host.iface_mtu))

    def activate(self, own_subnet: netaddr.IPNetwork) -> None:
        with self._lock:
            self._own_subnet = netaddr.IPNetwork(own_subnet).cidr
            self._forget_plans()

    def add_peer(self, lease: Lease) -> None:
        """Route the peer's subnet via its PublicIP. Raises HostNetworkError when the peer is
        not on a directly connected subnet of the underlay interface. Leases of another
        backend type, and our own, are skipped (as flanneld does)."""
        with self._lock:
            _raise_if(self._sync({lease.key: lease}, stale=False))

    def remove_peer(self, lease: Lease) -> None:
        """Delete our route to the lease's subnet (routes of other owners stay)."""
        with self._lock:
            batch = Batch(self._tables(None), None)
            batch.delete_route(str(lease.subnet.cidr))
            _raise_if(self._write(batch.requests))

    def reconcile(self, peers: dict[str, Lease]) -> int:
        """Re-create missing/changed routes and delete our routes no current peer needs.
        Peers that cannot be routed are reported together in one HostNetworkError at the end,
        after all the others were programmed. Skipped while the kernel notified no change since
        the last clean round (base.py `_at_rest`). Returns the routes written."""
        with self._lock:
            if self._at_rest(peers):
                return 0
            written = self._written
            errors = self._sync(peers, stale=True)
            self._full_round_done(peers, errors)
            _raise_if(errors)
            return self._written - written

    def close(self) -> None:
        """Only the netlink socket closes; routes stay so traffic survives an agent restart."""
        with self._lock:
            self._close_netlink()

    # ---- internals -------------------------------------------------------------------------

    def _check_underlay(self, ipr: nl.IPRouteAPI) -> None:
        if nl.get_link(ipr, self._host.iface_index) is None:
            raise HostNetworkError(
                f"underlay interface {self._host.iface} (index {self._host.iface_index}) does not exist; "
                "restart the agent so it finds the interface again")

    def _sync(self, peers: dict[str, Lease], stale: bool) -> list[str]:
        """Route `peers` from one route dump, as one batch; with `stale`, `peers` are all of
        them and our routes none needs are deleted. Returns the errors, one per peer."""
        with nl.open_ipr(self._host.netns) as ipr:
            self._check_underlay(ipr)
            underlay_nets = nl.ipv4_addresses(ipr, self._host.iface_index)
            # Adjacency depends on the underlay's addresses: plans are kept while those stay.
            underlay = (self._host.iface_index, *sorted(str(net) for net in underlay_nets))
            if underlay != self._underlay:
                self._underlay = underlay
                self._forget_plans()
            return self._program_peers(
                peers, None,
                lambda key, lease: self._plan_of(key, lease, None, partial(self._plan, ipr, lease, underlay_nets)),
                lambda lease: f"host-gw peer {lease.key} ({lease.attrs.public_ip})", stale,
                lambda _lease, exc: str(exc))

    def _plan(self, ipr: nl.IPRouteAPI, lease: Lease, underlay_nets: list[netaddr.IPNetwork]) -> PeerPlan | None:
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
        return PeerPlan(RouteSpec(str(lease.subnet.cidr), attrs.public_ip, self._host.iface_index))


def _raise_if(errors: list[str]) -> None:
    if errors:
        raise HostNetworkError("; ".join(errors))
