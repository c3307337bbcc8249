"""TUN -> UDP: the forwarder's sending thread, its buffers and its four send paths.

Each read lands in a slot of a ring (in vnet mode behind room for FAST_MAGIC, so a fast
datagram is sent straight from the slot); datagrams are queued for one sendmmsg and the
slots stay untouched until that flush. The send paths, by peer and packet:

  plain TUN (no vnet header)        send_plain: the bare packet
  fast peer                         send_fast: FAST_MAGIC + vnet header + packet; a super-packet
                                    above one datagram goes as GSO pieces (wire.split_for_datagrams)
  flannel-format peer, no GSO       send_unsegmented: the bare packet, its checksum finished
  flannel-format peer, GSO          send_segmented: MTU-sized packets, headers built here,
                                    payload from the slot

This is the speed-critical loop: locals stand in for attributes where a packet passes.
"""

from __future__ import annotations

import select
import struct
from typing import TYPE_CHECKING

from . import wire
from .mmsg import SLOT, Arena, SendBatch
from .table import PeerEntry

if TYPE_CHECKING:
    from .forwarder import Forwarder

TX_SLOTS_VNET = 16
TX_SLOTS_PLAIN = 64
SEND_BATCH = 1024  # UIO_MAXIOV: the most sendmmsg takes
HEAD_SLOT = 192  # room for FAST_MAGIC + vnet header + IP and TCP headers (2 + 10 + 60 + 60)
POLL_MS = 200  # how quickly stop() is noticed by an idle thread
_DST = struct.Struct("!I")
_NEEDS_CSUM = wire.F_NEEDS_CSUM
_V = wire.VNET_HDR_LEN
_F = wire.FAST_HDR_LEN

PeerCounts = list[int]  # [fast frames, fast bytes, plain packets, plain bytes]


class TxPath:
    def __init__(self, fwd: Forwarder) -> None:
        self.fwd = fwd
        self.vnet = vnet = fwd.tun.vnet_hdr
        self.nslots = nslots = TX_SLOTS_VNET if vnet else TX_SLOTS_PLAIN
        self.ring = Arena(nslots * SLOT)
        self.buf, self.view, self.base = self.ring.buf, self.ring.view, self.ring.addr
        skip = _F if vnet else 0  # bytes before what the TUN read fills: room for FAST_MAGIC
        self.pkt_at = _F + _V if vnet else 0
        self.reads = [self.view[i * SLOT + skip:(i + 1) * SLOT] for i in range(nslots)]
        for i in range(nslots):
            self.buf[i * SLOT:i * SLOT + _F] = wire.FAST_MAGIC
        self.heads = Arena(SEND_BATCH * HEAD_SLOT)
        self.heads_used = 0
        self.batch = SendBatch(SEND_BATCH)
        self.sock_fd = fwd.sock.fileno()
        self.counters, self.peers = fwd.tx_counters, fwd.tx_peers

    def run(self) -> None:
        fwd, batch, reads, nslots, counters = self.fwd, self.batch, self.reads, self.nslots, self.counters
        readinto = fwd.tun.file.readinto
        forward = self.forward
        poller = select.poll()
        poller.register(fwd.tun.fd, select.POLLIN)
        used = 0
        while fwd.running:
            if used == nslots:
                self.flush()
                used = 0
            n = readinto(reads[used])
            if not n:
                if batch.pending:
                    self.flush()
                used = 0
                poller.poll(POLL_MS)
                continue
            counters["tun_reads"] += 1
            counters["tun_read_bytes"] += n
            if forward(used * SLOT, n):
                used += 1
        self.flush()

    def flush(self) -> None:
        """Send what is queued; the slots and head buffers are free again afterwards."""
        failed = self.batch.flush(self.sock_fd)[1]
        self.heads_used = 0
        if failed:
            self.counters["tx_send_errors"] += failed

    def forward(self, slot: int, n: int) -> bool:
        """Queue the n bytes read into slot; True when the slot stays in use until the flush."""
        buf, counters = self.buf, self.counters
        po = slot + self.pkt_at
        plen = n - _V if self.vnet else n
        if plen < 20 or buf[po] >> 4 != 4:
            counters["tx_not_ipv4"] += 1
            return False
        entry = self.fwd.table.lookup(_DST.unpack_from(buf, po + 16)[0])
        if entry is None:
            counters["tx_no_route"] += 1
            self.fwd.answer_unreachable(self.view[po:po + plen], self.vnet)
            return False
        c = self.peers.get(entry.ip)
        if c is None:
            c = self.peers[entry.ip] = [0, 0, 0, 0]
        if plen > counters["max_read"]:
            counters["max_read"] = plen
        if self.batch.room == 0:
            self.flush()
        if not self.vnet:
            return self.send_plain(entry, po, plen, c)
        if entry.fast:
            return self.send_fast(entry, slot, n, c)
        if buf[slot + _F + 1] == wire.GSO_NONE:  # gso_type of the vnet header
            return self.send_unsegmented(entry, slot, plen, c)
        return self.send_segmented(entry, slot, plen, c)

    def send_plain(self, entry: PeerEntry, po: int, plen: int, c: PeerCounts) -> bool:
        self.batch.add(entry.name_ptr, self.base + po, plen)
        c[2] += 1
        c[3] += plen
        return True

    def send_fast(self, entry: PeerEntry, slot: int, n: int, c: PeerCounts) -> bool:
        plen = n - _V
        if plen <= wire.MAX_FAST_PACKET:
            self.batch.add(entry.name_ptr, self.base + slot, n + _F)
            c[0] += 1
            c[1] += plen
            return True
        # The 65,507-byte catch: two (or more) GSO pieces, the payload sent in place.
        po = slot + self.pkt_at
        try:
            pieces = wire.split_for_datagrams(wire.VnetHdr.parse(self.buf, slot + _F), self.view[po:po + plen])
        except wire.WireError:
            self.counters["tx_bad_packets"] += 1
            return False
        self.counters["tx_split"] += 1
        self.queue_pieces(entry, po, pieces, True, c)
        return True

    def send_unsegmented(self, entry: PeerEntry, slot: int, plen: int, c: PeerCounts) -> bool:
        po = slot + self.pkt_at
        if self.buf[slot + _F] & _NEEDS_CSUM:
            try:
                wire.finish_checksum(self.view[po:po + plen], wire.VnetHdr.parse(self.buf, slot + _F))
            except wire.WireError:
                self.counters["tx_bad_packets"] += 1
                return False
        return self.send_plain(entry, po, plen, c)

    def send_segmented(self, entry: PeerEntry, slot: int, plen: int, c: PeerCounts) -> bool:
        po = slot + self.pkt_at
        try:
            pieces = wire.split_gso(wire.VnetHdr.parse(self.buf, slot + _F), self.view[po:po + plen], 1, True)
        except wire.WireError:
            self.counters["tx_bad_packets"] += 1
            return False
        self.counters["tx_segmented"] += 1
        self.counters["tx_segments"] += len(pieces)
        self.queue_pieces(entry, po, pieces, False, c)
        return True

    def queue_pieces(self, entry: PeerEntry, po: int, pieces: list[wire.Piece], fast: bool, c: PeerCounts) -> None:
        """New headers from the heads arena, payload straight from the read slot."""
        batch, hview, haddr, base = self.batch, self.heads.view, self.heads.addr, self.base
        for piece in pieces:
            if batch.room == 0 or self.heads_used == SEND_BATCH:
                self.flush()
            head = wire.FAST_MAGIC + piece.vnet.pack() + piece.head if fast else piece.head
            ho = self.heads_used * HEAD_SLOT
            hview[ho:ho + len(head)] = head
            self.heads_used += 1
            size = piece.end - piece.start
            batch.add(entry.name_ptr, haddr + ho, len(head), base + po + piece.start, size)
            if fast:
                c[0] += 1
                c[1] += len(piece.head) + size
            else:
                c[2] += 1
                c[3] += len(head) + size
