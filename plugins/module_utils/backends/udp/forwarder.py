"""The udp backend's packet loop: flannel0 <-> UDP, one thread per direction.

TX (TUN -> UDP, tx.py): read a packet (in vnet mode a virtio_net_hdr + possibly a GSO
super-packet), find the peer whose subnet holds the destination, and queue a datagram for
sendmmsg: to a fast peer the packet with its vnet header (split into GSO pieces above one
datagram), to a flannel-format peer bare packets (a super-packet segmented here).
RX (UDP -> TUN, rx.py): recvmmsg, drop datagrams whose source is not a current peer's
PublicIP, write each packet to the TUN.

The peer table is an immutable snapshot swapped in by set_routes(): the threads read it
without a lock. Each counter has one writing thread; stats() copies them.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ...host.tun import TunDevice
from . import wire
from .mmsg import key_addr
from .rx import RxPath
from .table import PeerRoute, RouteTable
from .tx import POLL_MS, TxPath

ICMP_PER_SECOND = 100

TX_COUNTERS = ("tun_reads", "tun_read_bytes", "max_read", "tx_no_route", "tx_not_ipv4", "tx_icmp",
               "tx_split", "tx_segmented", "tx_segments", "tx_send_errors", "tx_bad_packets")
PEER_COUNTERS = ("tx_fast", "tx_fast_bytes", "tx_plain", "tx_plain_bytes",
                 "rx_fast", "rx_fast_bytes", "rx_plain", "rx_plain_bytes")
RX_COUNTERS = ("rx_datagrams", "dropped_not_peer", "rx_malformed", "rx_converted", "tun_write_errors")


class Forwarder:
    """Moves packets between an attached TUN device and a bound UDP socket."""

    def __init__(self, tun: TunDevice, sock: socket.socket) -> None:
        self.tun = tun
        self.sock = sock
        self._table = RouteTable()
        self._running = False
        self._threads: list[threading.Thread] = []
        self.tx_counters = dict.fromkeys(TX_COUNTERS, 0)
        self.rx_counters = dict.fromkeys(RX_COUNTERS, 0)
        self.tx_peers: dict[str, list[int]] = {}  # ip -> [fast frames, fast bytes, plain packets, plain bytes]
        self.rx_peers: dict[int, list[int]] = {}  # addr key -> same
        self.errors: dict[str, str] = {}

    # --- control (any thread) ----------------------------------------------------------

    def set_routes(self, routes: Iterable[PeerRoute]) -> None:
        self._table = RouteTable(routes, self._table)

    @property
    def routes(self) -> tuple[PeerRoute, ...]:
        return self._table.routes

    def start(self) -> None:
        if self.alive():
            return
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, POLL_MS * 1000))
        self._running = True
        self.errors.clear()
        self._threads = [
            threading.Thread(target=self._guard, args=("tx", self._tx_loop), name="udp-tx", daemon=True),
            threading.Thread(target=self._guard, args=("rx", self._rx_loop), name="udp-rx", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._running = False
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        self._threads = []

    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def stats(self) -> dict[str, Any]:
        """Counters; per peer (by PublicIP) the datagrams each way in each format, and the
        format we send it ("gso": our fast path, "flannel": one packet per datagram, None:
        no longer a peer)."""
        peers: dict[str, dict[str, Any]] = {}

        def entry(ip: str) -> dict[str, Any]:
            return peers.setdefault(ip, {**dict.fromkeys(PEER_COUNTERS, 0), "format": None})

        for ip, c in dict(self.tx_peers).items():
            entry(ip).update(zip(PEER_COUNTERS[:4], c, strict=True))
        for key, c in dict(self.rx_peers).items():
            entry(key_addr(key)).update(zip(PEER_COUNTERS[4:], c, strict=True))
        for route in self.routes:
            entry(route.public_ip)["format"] = "gso" if route.fast and self.tun.vnet_hdr else "flannel"
        return {
            "vnet_hdr": self.tun.vnet_hdr,
            "alive": self.alive(),
            **dict(self.tx_counters),
            **dict(self.rx_counters),
            "peers": peers,
            "routes": [{"subnet": f"{socket.inet_ntoa(r.network.to_bytes(4, 'big'))}/{r.prefixlen}",
                        "public_ip": r.public_ip, "fast": r.fast} for r in self.routes],
            "errors": dict(self.errors),
        }

    def _guard(self, name: str, loop: Callable[[], None]) -> None:
        try:
            loop()
        except Exception as exc:  # noqa: BLE001 - the thread ends; reconcile() sees alive() False and restarts
            self.errors[name] = f"{type(exc).__name__}: {exc}"

    # --- the packet threads ----------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    @property
    def table(self) -> RouteTable:
        return self._table

    def _tx_loop(self) -> None:
        TxPath(self).run()

    def _rx_loop(self) -> None:
        RxPath(self).run()

    _icmp_window = 0.0
    _icmp_count = 0

    def answer_unreachable(self, pkt: memoryview, vnet: bool) -> None:
        """ICMP net unreachable back into the TUN, as flannel does (rate-limited).

        Sent from the unreachable address itself: flanneld uses flannel0's own address,
        which the kernel drops as a martian (a local source arriving from outside).
        """
        now = time.monotonic()
        if now - self._icmp_window >= 1.0:
            self._icmp_window, self._icmp_count = now, 0
        if self._icmp_count >= ICMP_PER_SECOND:
            return
        reply = wire.net_unreachable(pkt, bytes(pkt[16:20]))
        if reply is None:
            return
        self._icmp_count += 1
        try:
            os.write(self.tun.fd, wire.EMPTY_VNET_HDR + reply if vnet else reply)
            self.tx_counters["tx_icmp"] += 1
        except OSError:
            pass
