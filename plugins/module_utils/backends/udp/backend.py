"""The udp backend: TUN flannel0 + UDP port 8285, compatible with flanneld's udp backend.

Layout as upstream flannel (backend/udp): flannel0 gets `<own lease network>/32` (so no
broadcast routes appear; it is the source address for host-to-container traffic) and an
explicit route for the whole Network via flannel0 (explicit because docker may already hold
a route that would stop the kernel adding one). MTU = underlay MTU - 28 (IPv4 + UDP).
Leases carry no BackendData upstream; ours advertise the GSO fast path as
`{"Overlaynet": {"GSO": 1}}` (1 = wire version), which upstream flanneld ignores.

Restart: flannel0 is persistent and its address/route stay, so a restarted agent re-attaches
to the same device; with `state_file` set, the peer table is saved on every change and
loaded by setup(), so forwarding resumes before etcd has even been read again. The queue and
the socket themselves wait for the next agent in systemd's fd store or a keeper (holder.py),
so packets sent meanwhile are delayed, not lost.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
from typing import Any

from ...deps import netaddr
from ...errors import HostNetworkError
from ...files import write_file_atomic
from ...host.netlink import (
    Route,
    ensure_link_attrs,
    ensure_link_up,
    ensure_only_ipv4_address,
    ensure_route,
    get_link,
    link_index,
    open_ipr,
)
from ...host.netns import in_netns
from ...host.tun import GSO_OFFLOADS, TunDevice, open_tun
from ...subnet.config import NetworkConfig
from ...subnet.lease import Lease
from ...subnet.peer_rules import PeerRules
from ..base import BackendRuntime, BackendSetup, LocalHost
from . import OVERHEAD, SPEC, TUN_NAME
from .forwarder import Forwarder
from .holder import Holder, make_holder
from .table import PeerRoute
from .wire import WIRE_VERSION

STATE_FILE = "udp-peers.json"  # in the runtime state dir: the peer table across restarts
FAST_PATH_KEY = "Overlaynet"
SOCKET_BUFFER = 8 * 1024 * 1024  # room for bursts of 64 KiB datagrams
IP_MTU_DISCOVER = 10  # <linux/in.h>; not exported by the socket module
IP_PMTUDISC_DONT = 0
log = logging.getLogger(__name__)


def fast_path_data() -> dict[str, Any]:
    return {FAST_PATH_KEY: {"GSO": WIRE_VERSION}}


def advertises_fast_path(lease: Lease) -> bool:
    """True if the lease's host speaks our GSO wire format (upstream leases have no data)."""
    return speaks_fast_path(lease.attrs.backend_data)


def speaks_fast_path(backend_data: Any) -> bool:
    """True if a lease's BackendData advertises our GSO wire format. Its "Overlaynet" object
    alone says nothing: it carries the host id of every lease of ours, fast path or not."""
    ours = backend_data.get(FAST_PATH_KEY) if isinstance(backend_data, dict) else None
    return isinstance(ours, dict) and ours.get("GSO") == WIRE_VERSION


class UdpBackend:
    """Backend protocol implementation for `Backend.Type: udp`."""

    def __init__(self, config: NetworkConfig, host: LocalHost, *, gso: bool = True,
                 tun_name: str = TUN_NAME, state_file: str | None = None) -> None:
        self.config = config
        self.host = host
        self.gso = gso  # False: plain TUN, flannel's per-packet format only (no advertisement)
        self.tun_name = tun_name
        self.state_file = state_file
        self.mtu = 0
        self.own_subnet: netaddr.IPNetwork | None = None
        self._tun: TunDevice | None = None
        self._ifindex = 0
        self._sock: socket.socket | None = None
        self._bound: tuple[str, int] | None = None
        self._forwarder: Forwarder | None = None
        self._routes: dict[str, PeerRoute] = {}
        self._holder: Holder = make_holder()  # holds flannel0's queue and the socket across agent restarts
        self._took_over = False
        self._rules: PeerRules | None = None  # rebuilt when the config, subnet or public IP change

    @classmethod
    def create(cls, config: NetworkConfig, host: LocalHost, runtime: BackendRuntime) -> UdpBackend:
        state = os.path.join(runtime.state_dir, STATE_FILE) if runtime.state_dir else None
        return cls(config, host, gso=runtime.fast_path, state_file=state)

    # --- Backend protocol --------------------------------------------------------------

    def setup(self, config: NetworkConfig | None = None, host: LocalHost | None = None) -> BackendSetup:
        self.config = config or self.config
        self.host = host or self.host
        self.mtu = SPEC.overlay_mtu(self.config.backend, self.host.iface_mtu)
        if self.mtu < 576:
            raise HostNetworkError(
                f"interface {self.host.iface} has MTU {self.host.iface_mtu}; the udp backend needs at "
                f"least {576 + OVERHEAD} (flannel0 MTU = underlay MTU - {OVERHEAD})"
            )
        if not self._routes:
            self._routes = self._load_state()
        if not self._took_over:
            self._took_over = True
            self._take_over_from_keeper()
        self._ensure_tun()
        self._ensure_socket()
        self._ensure_forwarder()
        # flannel's udp leases carry no BackendType; the fast path is advertised in BackendData.
        return BackendSetup(SPEC.lease_type, fast_path_data() if self.gso else None, self.mtu)

    def activate(self, own_subnet: netaddr.IPNetwork) -> None:
        if not self.mtu:
            self.setup()
        self.own_subnet = netaddr.IPNetwork(own_subnet)
        # a stale route for our own new subnet (e.g. from a lease we had as a peer) must go
        self._routes = {k: r for k, r in self._routes.items() if not self._is_own(r)}
        self._push_routes()
        self._ensure_tun()
        self._ensure_address_and_route()
        self._ensure_forwarder()

    def add_peer(self, lease: Lease) -> None:
        route = self._route_for(lease)
        if route is None:
            return
        if self._routes.get(lease.key) != route:
            self._routes[lease.key] = route
            self._push_routes()

    def remove_peer(self, lease: Lease) -> None:
        if self._routes.pop(lease.key, None) is not None:
            self._push_routes()

    def reconcile(self, peers: dict[str, Lease]) -> int:
        """Returns what it changed: the peer table swapped in, flannel0 re-created or set
        right, its address or route, a forwarder restarted (one each)."""
        routes: dict[str, PeerRoute] = {}
        for key, lease in peers.items():
            route = self._route_for(lease)
            if route is not None:
                routes[key] = route
        changed = routes != self._routes
        if changed:
            self._routes = routes
            self._push_routes()
        if not self.mtu:
            return int(changed)  # setup() has not run: no device of ours to check yet
        repaired = [changed, self._ensure_tun()]
        if self.own_subnet is not None:
            repaired.append(self._ensure_address_and_route())
        self._ensure_socket()
        repaired.append(self._ensure_forwarder())
        return sum(repaired)

    def close(self) -> None:
        """Stop forwarding; flannel0 (persistent), its address and route stay for the next run,
        and the fd store or keeper holds the queue and socket for the next agent to take over."""
        self._holder.release()
        self._release(tun=True, sock=True)

    # --- observability -------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Forwarder counters (per peer: fast frames / plain packets each way, drops, splits)."""
        out: dict[str, Any] = {"device": self.tun_name, "mtu": self.mtu, "gso": self.gso}
        if self._forwarder is not None:
            out.update(self._forwarder.stats())
        return out

    # --- peers ---------------------------------------------------------------------------

    def _route_for(self, lease: Lease) -> PeerRoute | None:
        subnet = lease.subnet
        self._rules = PeerRules.cached(self._rules, self.config, self.own_subnet, self.host.public_ip, SPEC.lease_type)
        reason = self._rules.check(lease)
        if subnet.version != 4 or reason is not None:
            log.debug("udp: skipping lease %s: %s", lease.key, reason)
            return None
        route = PeerRoute(int(subnet.network), subnet.prefixlen, lease.attrs.public_ip,
                          self.config.backend.port, self.gso and advertises_fast_path(lease))
        return None if self._is_own(route) else route

    def _is_own(self, route: PeerRoute) -> bool:
        if route.public_ip == self.host.public_ip:
            return True  # our own (or our stale) lease: never send to ourselves
        own = self.own_subnet
        return own is not None and route.network == int(own.network) and route.prefixlen == own.prefixlen

    def _push_routes(self) -> None:
        if self._forwarder is not None:
            self._forwarder.set_routes(self._routes.values())
        self._save_state()

    def _load_state(self) -> dict[str, PeerRoute]:
        if not self.state_file:
            return {}
        try:
            with open(self.state_file, encoding="utf-8") as f:
                doc = json.load(f)
            routes = {key: PeerRoute(*value) for key, value in doc["peers"].items()}
            for route in routes.values():
                socket.inet_pton(socket.AF_INET, route.public_ip)
                if not (isinstance(route.network, int) and isinstance(route.port, int) and 0 <= route.prefixlen <= 32
                        and isinstance(route.fast, bool)):
                    raise ValueError(route)
            return routes
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}  # missing or unreadable: etcd will tell us again

    def _save_state(self) -> None:
        if not self.state_file:
            return
        doc = {"version": 1, "peers": {key: list(route) for key, route in self._routes.items()}}
        try:
            write_file_atomic(self.state_file, json.dumps(doc))
        except OSError:
            pass  # only a restart speed-up; the data plane does not depend on it

    # --- device, socket, forwarder ---------------------------------------------------------

    def _ensure_tun(self) -> bool:
        """Attach flannel0 (creating it), and keep MTU and state right; re-create if deleted.
        True when it had to re-create or change it."""
        with open_ipr(self.host.netns) as ipr:
            index = link_index(ipr, self.tun_name)
            recreated = False
            if self._tun is not None and self._ifindex and (index != self._ifindex or self._tun.closed):
                log.warning("%s was deleted or replaced; re-creating it", self.tun_name)
                self._release(tun=True)
                recreated = True
            if self._tun is None:
                self._tun = open_tun(self.tun_name, vnet_hdr=self.gso, offloads=GSO_OFFLOADS, netns=self.host.netns)
                index = link_index(ipr, self.tun_name)
            if index is None:
                raise HostNetworkError(f"TUN device {self.tun_name} vanished right after it was created")
            self._ifindex = index
            link = get_link(ipr, index)
            if link is not None:
                recreated = ensure_link_attrs(ipr, link, mtu=self.mtu) or recreated
                recreated = ensure_link_up(ipr, link) or recreated
        return recreated

    def _take_over_from_keeper(self) -> None:
        """Adopt the queue and socket the previous agent left (fd store or keeper), if they fit."""
        port = self.config.backend.port
        with in_netns(self.host.netns):
            got = self._holder.take(self.tun_name, self.gso, (self.host.source_ip, port))
        if got is None:
            return
        tun_fd, sock_fd = got
        os.set_blocking(tun_fd, False)  # as open_tun leaves it
        offloads = GSO_OFFLOADS if self.gso else 0
        self._tun = TunDevice(self.tun_name, tun_fd, self.gso, offloads, io.FileIO(tun_fd, "r+b", closefd=True))
        self._ifindex = 0  # learnt by _ensure_tun
        self._sock = socket.socket(fileno=sock_fd)
        self._bound = (self.host.source_ip, port)

    def _ensure_keeper(self) -> None:
        if self._tun is None or self._sock is None or self._tun.closed:
            return
        port = self.config.backend.port
        with in_netns(self.host.netns):  # the keeper's socket is named after our namespace
            self._holder.keep(self._tun.fd, self._sock.fileno(), self.tun_name, self.gso, (self.host.source_ip, port))

    def _stop_forwarding(self) -> None:
        """Before the TUN or the socket goes: the keeper would hold a stale queue or socket,
        and the forwarder's threads use both."""
        self._holder.drop()
        if self._forwarder is not None:
            self._forwarder.stop()
            self._forwarder = None

    def _release(self, *, tun: bool = False, sock: bool = False) -> None:
        """Let go of flannel0's queue and/or the socket (keeper and forwarder first)."""
        self._stop_forwarding()
        if tun and self._tun is not None:
            self._tun.close()
            self._tun = None
        if sock and self._sock is not None:
            self._sock.close()
            self._sock = None

    def _ensure_address_and_route(self) -> bool:
        """flannel0 = <own network>/32 (its only IPv4 address); the Network routed via flannel0.
        True when either had to be set."""
        if self.own_subnet is None:
            return False  # not activated yet: there is no address to give
        address = netaddr.IPNetwork(f"{self.own_subnet.network}/32")
        with open_ipr(self.host.netns) as ipr:
            addressed = ensure_only_ipv4_address(ipr, self._ifindex, self.tun_name, address)
            routed = ensure_route(ipr, Route(self.config.network.cidr, None, self._ifindex))
        return addressed or routed

    def _ensure_socket(self) -> None:
        port = self.config.backend.port
        if self._sock is not None and self._sock.fileno() >= 0:
            if self._bound == (self.host.source_ip, port):
                return
            self._release(sock=True)  # the public IP or the configured port changed
        with in_netns(self.host.netns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            for force, plain in ((33, socket.SO_RCVBUF), (32, socket.SO_SNDBUF)):  # SO_*BUFFORCE
                try:
                    sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
                except OSError:
                    sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)
            # Super-packets are larger than the underlay MTU: let the kernel fragment them
            # instead of failing with EMSGSIZE, and never set DF.
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
            sock.bind((self.host.source_ip, port))
        except OSError as exc:
            sock.close()
            raise HostNetworkError(
                f"cannot bind UDP {self.host.source_ip}:{port} ({exc.strerror}); is another flannel "
                "agent running, or is the public IP not on this host?"
            ) from None
        self._sock = sock
        self._bound = (self.host.source_ip, port)

    def _ensure_forwarder(self) -> bool:
        """Start the forwarder; True when it had stopped and was started again."""
        if self._tun is None or self._sock is None:
            return False
        restarted = self._forwarder is not None and not self._forwarder.alive()
        if restarted and self._forwarder is not None:
            errors = self._forwarder.errors
            self._forwarder.stop()
            self._forwarder = None
            if errors:  # a thread died on an error: get a fresh attachment and socket
                log.warning("udp forwarder stopped (%s); restarting it",
                            "; ".join(f"{k}: {v}" for k, v in errors.items()))
                self._release(tun=True, sock=True)
                self._ensure_tun()
                self._ensure_socket()
        if self._forwarder is None:
            self._forwarder = Forwarder(self._tun, self._sock)
            self._forwarder.set_routes(self._routes.values())
        self._forwarder.start()
        self._ensure_keeper()
        return restarted
