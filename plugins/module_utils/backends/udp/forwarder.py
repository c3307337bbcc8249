"""The udp backend's packet loop: flannel0 <-> UDP, one thread per direction.

TX (TUN -> UDP): read a packet (in vnet mode a virtio_net_hdr + possibly a GSO super-packet),
find the peer whose subnet holds the destination, and queue a datagram for sendmmsg:
  * fast peer: FAST_MAGIC + vnet header + packet, straight from the read buffer; a super-
    packet too big for one datagram is split into GSO pieces (udp_wire.split_for_datagrams);
  * flannel-format peer: the bare packet; a super-packet is segmented into MTU-sized plain
    packets whose headers are built here and whose payload is sent from the read buffer.
RX (UDP -> TUN): recvmmsg, drop datagrams whose source is not a current peer's PublicIP,
write each packet to the TUN. In vnet mode a plain packet goes out behind 10 zero bytes
(an empty vnet header) that the receive slot keeps in front of it, so nothing is copied.

The peer table is an immutable snapshot swapped in by set_routes(): the threads read it
without a lock. Each counter has one writing thread; stats() copies them.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from . import wire
from .mmsg import Arena, RecvBatch, SendBatch, addr_key, key_addr, sockaddr

SLOT = 65600  # > 2 + 10 + 65535: any packet a TUN (gso_max_size 64 KiB) or a datagram can hold
TX_SLOTS_VNET = 16
TX_SLOTS_PLAIN = 64
RX_SLOTS = 32
SEND_BATCH = 1024  # UIO_MAXIOV: the most sendmmsg takes
HEAD_SLOT = 192  # room for FAST_MAGIC + vnet header + IP and TCP headers (2 + 10 + 60 + 60)
POLL_MS = 200  # how quickly stop() is noticed by an idle thread
ICMP_PER_SECOND = 100
_DST = struct.Struct("!I")
_NEEDS_CSUM = wire.F_NEEDS_CSUM
_V = wire.VNET_HDR_LEN
_F = wire.FAST_HDR_LEN

TX_COUNTERS = ("tun_reads", "tun_read_bytes", "max_read", "tx_no_route", "tx_not_ipv4", "tx_icmp",
               "tx_split", "tx_segmented", "tx_segments", "tx_send_errors", "tx_bad_packets")
PEER_COUNTERS = ("tx_fast", "tx_fast_bytes", "tx_plain", "tx_plain_bytes",
                 "rx_fast", "rx_fast_bytes", "rx_plain", "rx_plain_bytes")
RX_COUNTERS = ("rx_datagrams", "dropped_not_peer", "rx_malformed", "rx_converted", "tun_write_errors")


class PeerRoute(NamedTuple):
    """Where packets for one remote subnet go, and in which format."""

    network: int  # subnet address as an integer
    prefixlen: int
    public_ip: str
    port: int
    fast: bool  # the peer advertised the GSO fast path


class _Entry:
    __slots__ = ("ip", "fast", "sa", "name_ptr")

    def __init__(self, route: PeerRoute) -> None:
        self.ip = route.public_ip
        self.fast = route.fast
        self.sa = sockaddr(route.public_ip, route.port)
        self.name_ptr = ctypes.addressof(self.sa)


class RouteTable:
    """Immutable: destination -> peer by longest prefix, and the set of allowed sources."""

    def __init__(self, routes: Iterable[PeerRoute] = ()) -> None:
        by_len: dict[int, dict[int, _Entry]] = {}
        self.routes = tuple(sorted(set(routes)))
        for route in self.routes:
            mask = (0xFFFFFFFF << (32 - route.prefixlen)) & 0xFFFFFFFF
            by_len.setdefault(route.prefixlen, {})[route.network & mask] = _Entry(route)
        self.tables = tuple(((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF, by_len[plen])
                            for plen in sorted(by_len, reverse=True))
        self.allowed = frozenset(addr_key(r.public_ip) for r in self.routes)

    def lookup(self, dst: int) -> _Entry | None:
        for mask, table in self.tables:
            entry = table.get(dst & mask)
            if entry is not None:
                return entry
        return None


class Forwarder:
    """Moves packets between an attached TUN device and a bound UDP socket."""

    def __init__(self, tun: Any, sock: socket.socket) -> None:
        self.tun = tun  # tun.TunDevice
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
        self._table = RouteTable(routes)

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

    def _guard(self, name: str, loop: Any) -> None:
        try:
            loop()
        except Exception as exc:  # noqa: BLE001 - the thread ends; reconcile() sees alive() False and restarts
            self.errors[name] = f"{type(exc).__name__}: {exc}"

    # --- TUN -> UDP ----------------------------------------------------------------------

    def _tx_loop(self) -> None:
        vnet = self.tun.vnet_hdr
        nslots = TX_SLOTS_VNET if vnet else TX_SLOTS_PLAIN
        ring = Arena(nslots * SLOT)
        buf, view, base = ring.buf, ring.view, ring.addr
        skip = _F if vnet else 0  # bytes before what the TUN read fills: room for FAST_MAGIC
        pkt_at = _F + _V if vnet else 0
        reads = [view[i * SLOT + skip:(i + 1) * SLOT] for i in range(nslots)]
        for i in range(nslots):
            buf[i * SLOT:i * SLOT + _F] = wire.FAST_MAGIC
        heads = Arena(SEND_BATCH * HEAD_SLOT)
        batch = SendBatch(SEND_BATCH)
        readinto = self.tun.file.readinto
        sock_fd = self.sock.fileno()
        poller = select.poll()
        poller.register(self.tun.fd, select.POLLIN)
        counters, peers = self.tx_counters, self.tx_peers
        used = heads_used = 0

        def flush() -> None:
            nonlocal heads_used
            sent, failed = batch.flush(sock_fd)
            heads_used = 0
            if failed:
                counters["tx_send_errors"] += failed

        def queue_pieces(entry: _Entry, po: int, pieces: list[wire.Piece], fast: bool, c: list[int]) -> None:
            """New headers from the heads arena, payload straight from the read slot."""
            nonlocal heads_used
            hview, haddr = heads.view, heads.addr
            for piece in pieces:
                if batch.room == 0 or heads_used == SEND_BATCH:
                    flush()
                head = wire.FAST_MAGIC + piece.vnet.pack() + piece.head if fast else piece.head
                ho = heads_used * HEAD_SLOT
                hview[ho:ho + len(head)] = head
                heads_used += 1
                size = piece.end - piece.start
                batch.add(entry.name_ptr, haddr + ho, len(head), base + po + piece.start, size)
                if fast:
                    c[0] += 1
                    c[1] += len(piece.head) + size
                else:
                    c[2] += 1
                    c[3] += len(head) + size

        while self._running:
            if used == nslots:
                flush()
                used = 0
            n = readinto(reads[used])
            if not n:
                if batch.pending:
                    flush()
                used = 0
                poller.poll(POLL_MS)
                continue
            counters["tun_reads"] += 1
            counters["tun_read_bytes"] += n
            slot = used * SLOT
            po = slot + pkt_at
            plen = n - _V if vnet else n
            if plen < 20 or buf[po] >> 4 != 4:
                counters["tx_not_ipv4"] += 1
                continue
            entry = self._table.lookup(_DST.unpack_from(buf, po + 16)[0])
            if entry is None:
                counters["tx_no_route"] += 1
                self._answer_unreachable(view[po:po + plen], vnet)
                continue
            c = peers.get(entry.ip)
            if c is None:
                c = peers[entry.ip] = [0, 0, 0, 0]
            if plen > counters["max_read"]:
                counters["max_read"] = plen
            if batch.room == 0:
                flush()
            if not vnet:
                batch.add(entry.name_ptr, base + po, plen)
                used += 1
                c[2] += 1
                c[3] += plen
            elif entry.fast:
                if plen <= wire.MAX_FAST_PACKET:
                    batch.add(entry.name_ptr, base + slot, n + _F)
                    c[0] += 1
                    c[1] += plen
                else:  # the 65,507-byte catch: two (or more) GSO pieces, payload sent in place
                    try:
                        pieces = wire.split_for_datagrams(wire.VnetHdr.parse(buf, slot + _F), view[po:po + plen])
                    except wire.WireError:
                        counters["tx_bad_packets"] += 1
                        continue
                    counters["tx_split"] += 1
                    queue_pieces(entry, po, pieces, True, c)
                used += 1
            elif buf[slot + _F + 1] == wire.GSO_NONE:  # gso_type of the vnet header
                if buf[slot + _F] & _NEEDS_CSUM:
                    try:
                        wire.finish_checksum(view[po:po + plen], wire.VnetHdr.parse(buf, slot + _F))
                    except wire.WireError:
                        counters["tx_bad_packets"] += 1
                        continue
                batch.add(entry.name_ptr, base + po, plen)
                used += 1
                c[2] += 1
                c[3] += plen
            else:
                try:
                    pieces = wire.split_gso(wire.VnetHdr.parse(buf, slot + _F), view[po:po + plen], 1, True)
                except wire.WireError:
                    counters["tx_bad_packets"] += 1
                    continue
                counters["tx_segmented"] += 1
                counters["tx_segments"] += len(pieces)
                queue_pieces(entry, po, pieces, False, c)
                used += 1
        flush()

    _icmp_window = 0.0
    _icmp_count = 0

    def _answer_unreachable(self, pkt: memoryview, vnet: bool) -> None:
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

    # --- UDP -> TUN ----------------------------------------------------------------------

    def _rx_loop(self) -> None:
        vnet = self.tun.vnet_hdr
        room = _V if vnet else 0  # zeros kept in front of each datagram: an empty vnet header
        rb = RecvBatch(RX_SLOTS, SLOT, room)
        buf, view = rb.arena.buf, rb.arena.view
        lengths, sources, len_index, src_index = rb.lengths, rb.sources, rb.len_index, rb.src_index
        counters, peers = self.rx_counters, self.rx_peers
        tun_fd, sock_fd = self.tun.fd, self.sock.fileno()
        write = os.write
        magic0, magic1 = wire.FAST_MAGIC
        while self._running:
            count = rb.recv(sock_fd)
            if not count:
                continue
            allowed = self._table.allowed
            counters["rx_datagrams"] += count
            for i in range(count):
                src = sources[src_index[i]]
                if src not in allowed:
                    counters["dropped_not_peer"] += 1
                    continue
                n = lengths[len_index[i]]
                o = i * SLOT + room
                first = buf[o] if n else 0
                c = peers.get(src)
                if c is None:
                    c = peers[src] = [0, 0, 0, 0]
                try:
                    if first == magic0 and n > _F + _V + 20 and buf[o + 1] == magic1:
                        c[0] += 1
                        c[1] += n - _F - _V
                        if vnet:
                            write(tun_fd, view[o + _F:o + n])
                        else:
                            self._write_converted(view[o + _F:o + n])
                    elif first >> 4 == 4 or first >> 4 == 6:
                        c[2] += 1
                        c[3] += n
                        write(tun_fd, view[o - room:o + n])
                    else:
                        counters["rx_malformed"] += 1
                except OSError as exc:
                    if exc.errno in (errno.EBADFD, errno.EBADF):
                        raise  # the device is gone: end the thread, reconcile re-creates it
                    counters["tun_write_errors"] += 1

    def _write_converted(self, frame: memoryview) -> None:
        """A fast-path frame reached a plain TUN (a peer still thinks we speak it): segment it."""
        self.rx_counters["rx_converted"] += 1
        hdr = wire.VnetHdr.parse(frame)
        pkt = frame[_V:]
        try:
            pieces = wire.plain_packets(hdr, pkt)
        except wire.WireError:
            self.rx_counters["rx_malformed"] += 1
            return
        if pieces is None:
            os.write(self.tun.fd, pkt)
            return
        for piece in pieces:
            os.write(self.tun.fd, piece.head + pkt[piece.start:piece.end])
