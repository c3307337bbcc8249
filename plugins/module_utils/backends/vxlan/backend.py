"""The vxlan backend, wire- and etcd-compatible with flanneld's.

Device flannel.<VNI> (kind vxlan, local = our public IP, UDP port 8472, learning off),
address = our lease's network address /32. Per remote lease:

    neigh  <remote .0> lladdr <VtepMAC> dev flannel.<VNI> permanent
    fdb    <VtepMAC> dst <PublicIP> dev flannel.<VNI> self permanent
    route  <remote subnet> via <remote .0> dev flannel.<VNI> onlink   (proto RTPROT_OVERLAYNET)

or, with DirectRouting and the peer on our underlay link, just
`route <remote subnet> via <PublicIP> dev <underlay>`. Beyond flanneld: the MAC is stable
(vtep_mac), and reconcile() repairs drift and removes what no current peer needs.
"""

from __future__ import annotations

import logging
from typing import Any

from ...deps import netaddr
from ...errors import HostNetworkError
from ...host import netlink as nl
from ...host.rtnl import RouteSpec
from ...subnet.config import NetworkConfig
from ...subnet.lease import Lease
from ..base import BackendSetup, KernelBackend, LocalHost
from ..peer_table import Batch, PeerPlan
from . import SPEC, backend_data, device_name, vtep_mac_of
from .mac import vtep_mac

log = logging.getLogger(__name__)


class VxlanBackend(KernelBackend):
    """flannel's vxlan backend for one host (see the module doc). Thread-safe."""

    def __init__(self, config: NetworkConfig, host: LocalHost) -> None:
        super().__init__(config, host)
        self._mac = vtep_mac(config.backend.vni, host.public_ip)
        # The peers last given (add/remove/reconcile): re-programmed at once when the device
        # had to be recreated or its MAC reset (the kernel flushes the neighbours then).
        self._peers: dict[str, Lease] = {}

    def _own_backend_data(self) -> dict[str, Any] | None:
        return backend_data(self._config.backend.vni, self._mac)

    @property
    def device_name(self) -> str:
        return device_name(self._config.backend)

    @property
    def mac(self) -> str:
        return self._mac

    @property
    def mtu(self) -> int:
        return SPEC.overlay_mtu(self._config.backend, self._host.iface_mtu)

    # ---- Backend protocol ------------------------------------------------------------------

    def setup(self, config: NetworkConfig | None = None, host: LocalHost | None = None) -> BackendSetup:
        """Create (or repair/recreate) flannel.<VNI>; return the lease's BackendData and the MTU."""
        with self._lock:
            self._rebind(config, host)
            self._mac = vtep_mac(self._config.backend.vni, self._host.public_ip)
            self._ensure_and_resync()
        return BackendSetup(SPEC.lease_type, backend_data(self._config.backend.vni, self._mac), self.mtu)

    def activate(self, own_subnet: netaddr.IPNetwork) -> None:
        """Address flannel.<VNI> with our subnet's network address /32 and bring it up."""
        with self._lock:
            self._own_subnet = netaddr.IPNetwork(own_subnet).cidr
            self._forget_plans()
            self._ensure_and_resync()

    def add_peer(self, lease: Lease) -> None:
        """Program neighbour, FDB entry and route (or the direct route) for one remote lease.
        Leases that are not vxlan, lack a VtepMAC, or are our own are skipped."""
        with self._lock:
            self._peers[lease.key] = lease
            with nl.open_ipr(self._host.netns) as ipr:
                index, reset = self._ensure_device(ipr)
                # After a reset everything on the device is gone: all known peers, this one included.
                errors = self._sync(ipr, index, self._peers if reset else {lease.key: lease}, stale=reset)
        _raise_if(errors)

    def remove_peer(self, lease: Lease) -> None:
        """Delete what add_peer programmed for this lease: route, neighbour and FDB entry."""
        subnet = str(lease.subnet.cidr)
        gateway = subnet.split("/", 1)[0]
        mac = vtep_mac_of(lease.attrs.backend_data)
        with self._lock:
            if self._peers.get(lease.key) == lease:
                del self._peers[lease.key]
            with nl.open_ipr(self._host.netns) as ipr:
                index = nl.link_index(ipr, self.device_name)
            batch = Batch(self._tables(index), index)
            # The subnet went to another host meanwhile (its MAC is on .0 now): leave it.
            if not (mac is not None and batch.tables.neighbours.get(gateway) not in (None, mac)):
                batch.delete_route(subnet)
                batch.delete_neighbour(gateway)
            if mac is not None:
                batch.delete_fdb(mac, lease.attrs.public_ip)
            errors = self._write(batch.requests)
        _raise_if(errors)

    def reconcile(self, peers: dict[str, Lease]) -> int:
        """Bring the device and every peer's entries back to what they should be, and remove
        our routes/neighbours/FDB entries that no current peer needs. Peers that cannot be
        programmed do not stop the others; they are reported in one HostNetworkError at the end.
        Reads three dumps and writes only differences, and is skipped while the kernel notified
        no change since the last clean round (base.py `_at_rest`).
        Returns the writes (a re-created device counts one)."""
        with self._lock:
            self._peers = dict(peers)
            if self._at_rest(self._peers):
                return 0
            written = self._written
            with nl.open_ipr(self._host.netns) as ipr:
                index, reset = self._ensure_device(ipr)
                errors = self._sync(ipr, index, self._peers, stale=True)
            self._full_round_done(self._peers, errors)
        _raise_if(errors)
        return self._written - written + int(reset)

    def close(self) -> None:
        """Only the netlink socket closes; the device, routes and FDB stay so traffic survives
        a restart."""
        with self._lock:
            self._close_netlink()

    # ---- internals -------------------------------------------------------------------------

    def _device_spec(self) -> dict[str, Any]:
        backend = self._config.backend
        spec: dict[str, Any] = {
            "vxlan_id": backend.vni,
            "vxlan_local": self._host.source_ip,
            "vxlan_link": self._host.iface_index,
            "vxlan_port": backend.port,
            "vxlan_learning": 1 if backend.get("Learning") else 0,
        }
        if backend.get("GBP"):
            spec["vxlan_gbp"] = True
        return spec

    def _incompatible(self, link: nl.NetlinkMessage) -> str | None:
        """Why an existing flannel.<VNI> cannot be kept (flanneld recreates it then), or None."""
        kind = nl.link_kind(link)
        if kind != "vxlan":
            return f"it is a {kind or 'non-vxlan'} device"
        data = nl.link_info_data(link)
        if data is None:
            return "it reports no vxlan attributes"
        spec = self._device_spec()
        have = {
            "vxlan_id": data.get("IFLA_VXLAN_ID"),
            "vxlan_local": data.get("IFLA_VXLAN_LOCAL"),
            "vxlan_link": data.get("IFLA_VXLAN_LINK"),
            "vxlan_port": data.get("IFLA_VXLAN_PORT"),
            "vxlan_learning": int(data.get("IFLA_VXLAN_LEARNING") or 0),
        }
        if spec.get("vxlan_gbp") or data.get("IFLA_VXLAN_GBP") is not None:
            have["vxlan_gbp"] = data.get("IFLA_VXLAN_GBP") is not None
            spec.setdefault("vxlan_gbp", False)
        if data.get("IFLA_VXLAN_GROUP"):  # a multicast group/remote floods unknown MACs
            return f"it has group/remote {data.get('IFLA_VXLAN_GROUP')}"
        diff = [f"{k[6:]} {have[k]!r} (want {v!r})" for k, v in spec.items() if have.get(k) != v]
        return ", ".join(diff) or None

    def _ensure_and_resync(self) -> None:
        """Ensure the device; if that reset it, re-program the known peers (errors logged:
        setup/activate must not fail because of one peer)."""
        with nl.open_ipr(self._host.netns) as ipr:
            index, reset = self._ensure_device(ipr)
            if reset and self._peers:
                for error in self._sync(ipr, index, self._peers, stale=True):
                    log.warning("%s", error)

    def _ensure_device(self, ipr: nl.IPRouteAPI) -> tuple[int, bool]:
        """flannel.<VNI> with our parameters, MAC and MTU, and (once activated) address and up.
        A device with wrong VNI/local/port/... is deleted and recreated (as flanneld does).
        Returns its index and whether its neighbours/FDB/routes were lost (new device, or a
        MAC change, which makes the kernel flush even permanent neighbours)."""
        name = self.device_name
        index = nl.link_index(ipr, name)
        link = nl.get_link(ipr, index) if index is not None else None
        if link is not None:
            why = self._incompatible(link)
            if why:
                log.info("recreating %s: %s", name, why)
                nl.delete_link(ipr, link["index"], name)
                link = None
        reset = link is None
        if link is None:
            nl.call(f"creating vxlan device {name}", ipr.link, "add", ifname=name, kind="vxlan",
                    address=self._mac, mtu=self.mtu, **self._device_spec())
            index = nl.link_index(ipr, name)
            link = nl.get_link(ipr, index) if index is not None else None
            if link is None:
                raise HostNetworkError(f"{name} vanished right after it was created; is another agent running?")
        reset |= (link.get("address") or "").lower() != self._mac
        nl.ensure_link_attrs(ipr, link, mtu=self.mtu, address=self._mac)
        if self._own_subnet is not None:
            address = netaddr.IPNetwork(f"{self._own_subnet.network}/32")
            nl.ensure_only_ipv4_address(ipr, link["index"], name, address)
            nl.ensure_link_up(ipr, link)
        return int(link["index"]), reset

    def _sync(self, ipr: nl.IPRouteAPI, index: int, peers: dict[str, Lease], stale: bool) -> list[str]:
        """Program `peers` (with `stale`: all of them; see _program_peers)."""
        underlay_nets = nl.ipv4_addresses(ipr, self._host.iface_index) if self._config.backend.direct_routing \
            else None
        return self._program_peers(peers, index, lambda key, lease: self._plan(ipr, key, lease, index, underlay_nets),
                                   lambda lease: f"vxlan peer {lease.key} ({lease.attrs.public_ip})", stale,
                                   _peer_error)

    def _plan(self, ipr: nl.IPRouteAPI, key: str, lease: Lease, index: int,
              underlay_nets: list[netaddr.IPNetwork] | None) -> PeerPlan | None:
        direct = self._config.backend.direct_routing  # adjacency may change: planned every time
        return self._plan_of(key, lease, index, lambda: self._make_plan(ipr, lease, index, underlay_nets),
                             keep=not direct)

    def _make_plan(self, ipr: nl.IPRouteAPI, lease: Lease, index: int,
                   underlay_nets: list[netaddr.IPNetwork] | None) -> PeerPlan | None:
        attrs = lease.attrs
        mac = vtep_mac_of(lease.attrs.backend_data)
        reason = self._rejects(lease)
        if reason is not None or mac is None:
            log.debug("vxlan: skipping lease %s: %s", lease.key, reason)
            return None
        subnet = str(lease.subnet.cidr)
        if self._config.backend.direct_routing and nl.directly_connected(
                ipr, attrs.public_ip, self._host.iface_index, underlay_nets):
            return PeerPlan(RouteSpec(subnet, attrs.public_ip, self._host.iface_index))
        gateway = subnet.split("/", 1)[0]
        return PeerPlan(RouteSpec(subnet, gateway, index, onlink=True), (gateway, mac), (mac, attrs.public_ip))


def _peer_error(lease: Lease, exc: HostNetworkError) -> str:
    return f"vxlan peer {lease.key} ({lease.attrs.public_ip}): {exc}"


def _raise_if(errors: list[str]) -> None:
    if errors:
        raise HostNetworkError("; ".join(errors))
