"""UDP -> TUN: the forwarder's receiving thread.

recvmmsg a batch; drop datagrams whose source is not a current peer's PublicIP; write each
packet to the TUN. In vnet mode a plain packet goes out behind 10 zero bytes (an empty vnet
header) that the receive slot keeps in front of it, so nothing is copied. A fast frame
reaching a plain TUN (a peer that still thinks we speak the fast path) is segmented here.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from . import wire
from .mmsg import SLOT, RecvBatch

if TYPE_CHECKING:
    from .forwarder import Forwarder

RX_SLOTS = 32
_V = wire.VNET_HDR_LEN
_F = wire.FAST_HDR_LEN


class RxPath:
    def __init__(self, fwd: Forwarder) -> None:
        self.fwd = fwd
        self.vnet = fwd.tun.vnet_hdr
        self.room = _V if self.vnet else 0  # zeros kept in front of each datagram: an empty vnet header
        self.batch = RecvBatch(RX_SLOTS, SLOT, self.room)
        self.counters, self.peers = fwd.rx_counters, fwd.rx_peers

    def run(self) -> None:
        fwd, rb, counters = self.fwd, self.batch, self.counters
        lengths, sources, len_index, src_index = rb.lengths, rb.sources, rb.len_index, rb.src_index
        sock_fd, deliver = fwd.sock.fileno(), self.deliver
        while fwd.running:
            count = rb.recv(sock_fd)
            if not count:
                continue
            allowed = fwd.table.allowed
            counters["rx_datagrams"] += count
            for i in range(count):
                src = sources[src_index[i]]
                if src not in allowed:
                    counters["dropped_not_peer"] += 1
                    continue
                try:
                    deliver(src, i * SLOT + self.room, lengths[len_index[i]])
                except OSError as exc:
                    if exc.errno in (errno.EBADFD, errno.EBADF):
                        raise  # the device is gone: end the thread, reconcile re-creates it
                    counters["tun_write_errors"] += 1

    def deliver(self, src: int, o: int, n: int) -> None:
        """Write the datagram of n bytes at offset o (from peer src) to the TUN, by its format."""
        buf, view = self.batch.arena.buf, self.batch.arena.view
        first = buf[o] if n else 0
        c = self.peers.get(src)
        if c is None:
            c = self.peers[src] = [0, 0, 0, 0]
        if first == wire.FAST_MAGIC[0] and n > _F + _V + 20 and buf[o + 1] == wire.FAST_MAGIC[1]:
            c[0] += 1
            c[1] += n - _F - _V
            if self.vnet:
                os.write(self.fwd.tun.fd, view[o + _F:o + n])
            else:
                self.write_converted(view[o + _F:o + n])
        elif first >> 4 == 4 or first >> 4 == 6:
            c[2] += 1
            c[3] += n
            os.write(self.fwd.tun.fd, view[o - self.room:o + n])
        else:
            self.counters["rx_malformed"] += 1

    def write_converted(self, frame: memoryview) -> None:
        """A fast-path frame reached a plain TUN: write it as flannel's plain packets."""
        self.counters["rx_converted"] += 1
        hdr = wire.VnetHdr.parse(frame)
        pkt = frame[_V:]
        try:
            pieces = wire.plain_packets(hdr, pkt)
        except wire.WireError:
            self.counters["rx_malformed"] += 1
            return
        if pieces is None:
            os.write(self.fwd.tun.fd, pkt)
            return
        for piece in pieces:
            os.write(self.fwd.tun.fd, piece.head + pkt[piece.start:piece.end])
