"""The wireguard backend, etcd-compatible with upstream flanneld's.

Device flannel-wg: the kernel's wireguard where it has the module (created over rtnetlink,
configured over generic netlink), else a TUN served by wireguard-go (configured over its
UAPI socket). Either way: this host's private key from the key file and ListenPort; address
= our lease's network address /32; one route for the whole Network via flannel-wg (a
destination no peer's AllowedIPs holds is dropped by wireguard, never sent in the clear).
Per remote lease: a peer with its PublicKey, endpoint PublicIP:Port, AllowedIPs = its
subnet, the PSK and keepalive of the config. Only what differs is written, so a peer already
as wanted keeps its session; a restarted agent reuses the key, so no peer needs an update.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from ...deps import netaddr
from ...errors import HostNetworkError
from ...host import netlink as nl
from ...subnet.config import NetworkConfig
from ...subnet.lease import Lease
from ..base import BackendSetup, KernelBackend, LocalHost
from . import DEVICE, SPEC, backend_data, peer_port, public_key_of
from .device import DeviceState, PeerConfig, WgControl, changes
from .genl import KernelWg
from .keys import KeyPair, key_file_path, load_or_create
from .userspace import WireguardGo

log = logging.getLogger(__name__)


class WireguardBackend(KernelBackend):
    """flannel's wireguard backend for one host (see the module doc). Thread-safe."""

    def __init__(self, config: NetworkConfig, host: LocalHost, device: str = DEVICE,
                 key_file: str | None = None) -> None:
        super().__init__(config, host)
        self.device = device  # tests on one host name theirs apart (the UAPI socket is per name)
        self.key_file = key_file or key_file_path()
        self._keys: KeyPair | None = None
        self._control: WgControl | None = None
        self._wggo: WireguardGo | None = None
        self._peers: dict[str, Lease] = {}

    @property
    def path(self) -> str:
        """Which device path this host took: "kernel" or "wireguard-go" ("" before setup)."""
        return self._control.path if self._control is not None else ""

    @property
    def mtu(self) -> int:
        return SPEC.overlay_mtu(self._config.backend, self._host.iface_mtu)

    def _own_backend_data(self) -> dict[str, Any] | None:
        return backend_data(self._keys.public, self._port) if self._keys is not None else None

    @property
    def _port(self) -> int:
        return int(self._config.backend.get("ListenPort"))

    # ---- Backend protocol ------------------------------------------------------------------

    def setup(self, config: NetworkConfig | None = None, host: LocalHost | None = None) -> BackendSetup:
        """The key (from the key file, made once), flannel-wg with it and ListenPort, the MTU."""
        with self._lock:
            self._rebind(config, host)
            if self._keys is None:
                self._keys, new = load_or_create(self.key_file)
                log.info("wireguard: %s key in %s, public key %s", "new" if new else "reusing the",
                         self.key_file, self._keys.public)
            self._ensure_device()
        return BackendSetup(SPEC.lease_type, backend_data(self._keys.public, self._port), self.mtu)

    def activate(self, own_subnet: netaddr.IPNetwork) -> None:
        """Address flannel-wg with our subnet's network address /32, up, the Network's route."""
        with self._lock:
            self._own_subnet = netaddr.IPNetwork(own_subnet).cidr
            self._ensure_device()

    def add_peer(self, lease: Lease) -> None:
        with self._lock:
            self._peers[lease.key] = lease
            self._sync({lease.key: lease}, stale=False)

    def remove_peer(self, lease: Lease) -> None:
        """Remove the lease's peer (unless a current peer holds the same key)."""
        with self._lock:
            if self._peers.get(lease.key) == lease:
                del self._peers[lease.key]
            key = public_key_of(lease.attrs.backend_data)
            control = self._control
            if key is None or control is None or any(
                    public_key_of(p.attrs.backend_data) == key for p in self._peers.values()):
                return
            have = control.get()
            if key in have.peers:
                remaining = {k: v for k, v in have.peers.items() if k != key}
                control.set(changes(DeviceState(None, 0, remaining), have))

    def reconcile(self, peers: dict[str, Lease]) -> None:
        """Bring the device (recreated if it went, e.g. wireguard-go died) and every peer back
        to what they should be; peers no current lease needs are removed."""
        with self._lock:
            self._peers = dict(peers)
            self._ensure_device()
            self._sync(self._peers, stale=True)

    def close(self) -> None:
        """Only the netlink socket closes; the device (and wireguard-go) stay, so traffic
        survives an agent restart."""
        with self._lock:
            self._close_netlink()

    def stats(self) -> dict[str, Any]:
        """/stats "wireguard": the device path this host took, the public key, the peers."""
        with self._lock:
            control = self._control
            peers = len(control.get().peers) if control is not None else 0
            return {"wireguard": {"device": self.device, "path": self.path, "listen_port": self._port,
                                  "public_key": self._keys.public if self._keys is not None else None,
                                  "peers": peers}}

    # ---- internals -------------------------------------------------------------------------

    def _ensure_device(self) -> None:
        with nl.open_ipr(self._host.netns) as ipr:
            link = self._device_link(ipr)
            if link is None:
                link = self._create(ipr)
            control = self._require_control()
            if self._keys is not None:
                control.set(changes(DeviceState(self._keys.private, self._port), control.get(), stale=False))
            nl.ensure_link_attrs(ipr, link, mtu=self.mtu)
            if self._own_subnet is not None:
                self._address_and_route(ipr, link, self._own_subnet)

    def _device_link(self, ipr: nl.IPRouteAPI) -> nl.NetlinkMessage | None:
        """flannel-wg as it is, when it can be kept (its control set); else None (deleted)."""
        index = nl.link_index(ipr, self.device)
        link = nl.get_link(ipr, index) if index is not None else None
        if link is None:
            return None
        kind = nl.link_kind(link)
        if kind == "wireguard":
            self._control = KernelWg(self.device, self._host.netns)
            return link
        if kind == "tun":
            self._wggo = self._wggo or WireguardGo(self.device, self._host.netns)
            if self._wggo.running():
                self._control = self._wggo.uapi
                return link
        log.info("recreating %s: it is a %s device%s", self.device, kind or "plain",
                 " nobody serves (wireguard-go is gone)" if kind == "tun" else "")
        nl.delete_link(ipr, int(link["index"]), self.device)
        self._control = None
        return None

    def _create(self, ipr: nl.IPRouteAPI) -> nl.NetlinkMessage:
        try:
            nl.call(f"creating wireguard device {self.device}", ipr.link, "add", ifname=self.device,
                    kind="wireguard")
            self._control = KernelWg(self.device, self._host.netns)
        except HostNetworkError as exc:
            if f"({errno.errorcode[errno.EOPNOTSUPP]})" not in str(exc):
                raise
            self._wggo = self._wggo or WireguardGo(self.device, self._host.netns)
            pid = self._wggo.start()
            self._control = self._wggo.uapi
            log.info("wireguard: the kernel has no wireguard; %s is served by wireguard-go (pid %d)",
                     self.device, pid)
        else:
            log.info("wireguard: %s is the kernel's wireguard device", self.device)
        index = nl.link_index(ipr, self.device)
        link = nl.get_link(ipr, index) if index is not None else None
        if link is None:
            raise HostNetworkError(f"{self.device} vanished right after it was created; is another agent running?")
        return link

    def _require_control(self) -> WgControl:
        if self._control is None:
            raise HostNetworkError(f"{self.device} has no control path (neither the kernel's nor wireguard-go)")
        return self._control

    def _address_and_route(self, ipr: nl.IPRouteAPI, link: nl.NetlinkMessage, subnet: netaddr.IPNetwork) -> None:
        index = int(link["index"])
        nl.ensure_only_ipv4_address(ipr, index, self.device, netaddr.IPNetwork(f"{subnet.network}/32"))
        nl.ensure_link_up(ipr, link)
        nl.ensure_route(ipr, nl.Route(self._config.network.cidr, None, index))

    def _want_peer(self, lease: Lease) -> PeerConfig | None:
        reason = self._rejects(lease)
        key = public_key_of(lease.attrs.backend_data)
        if reason is not None or key is None:
            log.debug("wireguard: skipping lease %s: %s", lease.key, reason)
            return None
        backend = self._config.backend
        port = peer_port(lease.attrs.backend_data, backend)
        return PeerConfig(key, f"{lease.attrs.public_ip}:{port}", (str(lease.subnet.cidr),),
                          int(backend.get("PersistentKeepaliveInterval") or 0), backend.get("PSK") or None)

    def _sync(self, peers: dict[str, Lease], stale: bool) -> None:
        """The peers of `peers` on the device, from one read of it, in one write of what differs."""
        if self._control is None:
            self._ensure_device()
        control = self._require_control()
        want: dict[str, PeerConfig] = {}
        for lease in peers.values():
            peer = self._want_peer(lease)
            if peer is not None:
                want[peer.public_key] = peer
        have = control.get()
        if not stale:
            want = {**have.peers, **want}
        control.set(changes(DeviceState(None, 0, want), have, stale=stale))
