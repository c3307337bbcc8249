"""Wire formats of the udp backend, as pure functions over bytes.

Two formats share the backend's UDP port (8285):

* flannel's: one plain IP packet per datagram, no header. Upstream flanneld speaks only this.
* the fast path between our agents: FAST_MAGIC, a virtio_net_hdr, then one packet that may
  be a GSO super-packet (up to ~64 KiB, segmented by the receiving kernel).

A datagram says which format it is in by its first byte: an IP packet starts with version
nibble 4 or 6, FAST_MAGIC with nibble 15, so a receiver never has to trust what it believes
the sender's lease says (a peer may have restarted in the other mode).

A UDP payload holds at most 65,507 bytes, less than the largest super-packet, so oversize
super-packets are split into two (or more) valid GSO packets at segment boundaries:
each piece is a self-contained TCP packet (own IP length/id, TCP seq/flags, pseudo-header
checksum), so the receiver stays stateless and a lost datagram costs only its own piece.
The same code with one segment per piece and finished checksums turns a super-packet into
MTU-sized plain packets for peers that speak flannel's format.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

# struct virtio_net_hdr (legacy, 10 bytes), little-endian as the TUN uses it on x86/arm64.
VNET_HDR = struct.Struct("<BBHHHH")
VNET_HDR_LEN = VNET_HDR.size
EMPTY_VNET_HDR = bytes(VNET_HDR_LEN)
F_NEEDS_CSUM = 0x01
F_DATA_VALID = 0x02
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80

WIRE_VERSION = 1
FAST_MAGIC = bytes((0xF1, WIRE_VERSION))  # 0xF_: not an IP version nibble
FAST_HDR_LEN = len(FAST_MAGIC)
MAX_UDP_PAYLOAD = 65507  # 65535 - 20 (IPv4) - 8 (UDP)
# Largest packet (after the vnet header) one fast-path datagram can carry.
MAX_FAST_PACKET = MAX_UDP_PAYLOAD - FAST_HDR_LEN - VNET_HDR_LEN

KIND_PLAIN = 0
KIND_FAST = 1
KIND_BAD = 2

_PROTO_TCP = 6
_PROTO_UDP = 17
_PROTO_ICMP = 1
_ICMP_ERRORS = frozenset((3, 4, 5, 11, 12))  # unreachable, source quench, redirect, time exceeded, parameter
_TCP_FIN = 0x01
_TCP_PSH = 0x08
_TCP_CWR = 0x80
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


class WireError(ValueError):
    """A packet cannot be framed, split or segmented as asked."""


class VnetHdr(NamedTuple):
    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    def pack(self) -> bytes:
        return VNET_HDR.pack(*self)

    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview, offset: int = 0) -> VnetHdr:
        return cls(*VNET_HDR.unpack_from(buf, offset))


class Piece(NamedTuple):
    """One output packet: new headers plus a slice [start, end) of the original packet's bytes.

    Keeping the payload as a slice lets the forwarder send it without copying.
    """

    vnet: VnetHdr
    head: bytes  # IP + TCP header, adjusted
    start: int
    end: int

    def packet(self, pkt: bytes | bytearray | memoryview) -> bytes:
        return self.head + bytes(pkt[self.start:self.end])


# --- checksums ---------------------------------------------------------------------------
# The ones'-complement sum of 16-bit words equals the big-endian integer of the bytes modulo
# 0xFFFF (2**16 == 1 mod 0xFFFF). int.from_bytes and % run in C, which makes a 64 KiB
# checksum cost microseconds in Python.


def word_sum(data: bytes | bytearray | memoryview) -> int:
    """Ones'-complement sum of data (odd length padded with a zero byte), modulo 0xFFFF."""
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    if len(data) > 512:
        # hi * 2**k + lo == hi + lo (mod 0xFFFF) for k a multiple of 16: halve before dividing
        k = (len(data) * 4) & ~15
        mask = _MASKS.get(k)
        if mask is None:
            mask = _MASKS[k] = (1 << k) - 1
        value = (value >> k) + (value & mask)
    return value % 0xFFFF


_MASKS: dict[int, int] = {}


def fold(total: int) -> int:
    """The 16-bit ones'-complement sum for a nonzero sum total (0xFFFF, never 0, for a multiple)."""
    return total % 0xFFFF or 0xFFFF


def checksum(total: int) -> int:
    """The Internet checksum field for a nonzero sum total."""
    return 0xFFFF - fold(total)


def inet_checksum(data: bytes | bytearray | memoryview) -> int:
    """RFC 1071 checksum of data (as written into a header whose field was zero)."""
    if not any(data):
        return 0xFFFF
    return checksum(word_sum(data))


def pseudo_sum(pkt: bytes | bytearray | memoryview, l4_len: int) -> int:
    """Sum of the TCP/UDP pseudo-header of IPv4/IPv6 packet pkt for an L4 length of l4_len."""
    if pkt[0] >> 4 == 4:
        return int.from_bytes(pkt[12:20], "big") + pkt[9] + l4_len
    return int.from_bytes(pkt[8:40], "big") + pkt[6] + l4_len


# --- fast-path framing -------------------------------------------------------------------


def classify(datagram: bytes | bytearray | memoryview) -> int:
    """KIND_PLAIN (flannel's format), KIND_FAST (ours) or KIND_BAD."""
    if not datagram:
        return KIND_BAD
    first = datagram[0]
    if first >> 4 in (4, 6):
        return KIND_PLAIN
    if len(datagram) > FAST_HDR_LEN + VNET_HDR_LEN and datagram[:FAST_HDR_LEN] == FAST_MAGIC:
        return KIND_FAST
    return KIND_BAD


def encode_fast(vnet: VnetHdr | bytes, pkt: bytes | bytearray | memoryview) -> bytes:
    """One fast-path datagram; the packet must fit (see MAX_FAST_PACKET)."""
    if len(pkt) > MAX_FAST_PACKET:
        raise WireError(f"packet of {len(pkt)} bytes does not fit one datagram; split it first")
    hdr = vnet.pack() if isinstance(vnet, VnetHdr) else bytes(vnet)
    return FAST_MAGIC + hdr + bytes(pkt)


def decode_fast(datagram: bytes | bytearray | memoryview) -> tuple[VnetHdr, bytes]:
    if classify(datagram) != KIND_FAST:
        raise WireError("not a fast-path datagram")
    return VnetHdr.parse(datagram, FAST_HDR_LEN), bytes(datagram[FAST_HDR_LEN + VNET_HDR_LEN:])


# --- checksum completion and segmentation ------------------------------------------------


def finish_checksum(pkt: bytearray | memoryview, vnet: VnetHdr) -> None:
    """Complete a CHECKSUM_PARTIAL packet in place (the field holds the pseudo-header sum)."""
    start, field = vnet.csum_start, vnet.csum_start + vnet.csum_offset
    if field + 2 > len(pkt) or start >= len(pkt):
        raise WireError(f"checksum offsets {start}+{vnet.csum_offset} outside a {len(pkt)}-byte packet")
    value = checksum(word_sum(pkt[start:]))
    if value == 0 and _l4_proto(pkt) == _PROTO_UDP:
        value = 0xFFFF  # 0 means "no checksum" in UDP
    _U16.pack_into(pkt, field, value)


def _l4_proto(pkt: bytes | bytearray | memoryview) -> int:
    return pkt[9] if pkt[0] >> 4 == 4 else pkt[6]


def _tcp_layout(pkt: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """(offset of the TCP header, header length through TCP, packet length) or WireError."""
    version = pkt[0] >> 4 if pkt else 0
    if version == 4:
        l4 = (pkt[0] & 0x0F) * 4
        if l4 < 20 or pkt[9] != _PROTO_TCP:
            raise WireError("GSO packet is not IPv4/TCP")
        total = _U16.unpack_from(pkt, 2)[0]
    elif version == 6:
        l4 = 40
        if pkt[6] != _PROTO_TCP:
            raise WireError("GSO IPv6 packet has extension headers or is not TCP")
        total = 40 + _U16.unpack_from(pkt, 4)[0]
    else:
        raise WireError("not an IP packet")
    if total != len(pkt) or len(pkt) < l4 + 20:
        raise WireError(f"IP length {total} does not match the {len(pkt)} bytes read")
    hdr_len = l4 + (pkt[l4 + 12] >> 4) * 4
    if hdr_len < l4 + 20 or hdr_len > len(pkt):
        raise WireError("TCP header length out of range")
    return l4, hdr_len, total


def split_gso(vnet: VnetHdr, pkt: bytes | bytearray | memoryview, segs_per_piece: int,
              finish: bool) -> list[Piece]:
    """Cut TCP GSO super-packet pkt at segment boundaries into pieces of segs_per_piece segments.

    finish=False: each piece is a valid GSO (or, if it is one segment, CHECKSUM_PARTIAL)
    packet for a vnet-header TUN. finish=True (use with segs_per_piece=1): plain packets with
    complete IP and TCP checksums, for peers in flannel's format. Header rules follow the
    kernel's own TCP segmentation: IPv4 id +1 per segment, seq advanced, FIN/PSH only on the
    last piece, CWR only on the first.
    """
    if vnet.gso_type & ~GSO_ECN not in (GSO_TCPV4, GSO_TCPV6):
        raise WireError(f"cannot segment gso_type {vnet.gso_type}")
    mss = vnet.gso_size
    if mss <= 0 or segs_per_piece <= 0:
        raise WireError("gso_size and segs_per_piece must be positive")
    l4, hdr_len, total = _tcp_layout(pkt)
    ip_head, tcp_head = bytes(pkt[:l4]), bytes(pkt[l4:hdr_len])
    thl = hdr_len - l4
    is_v4 = ip_head[0] >> 4 == 4
    # This runs once per MTU-sized segment for flannel-format peers, so the constant parts of
    # both checksums are summed once and each segment only adds the words that change.
    head = _head_struct(is_v4, l4, thl)
    ip_id0, ip_fixed, pseudo_fixed, ip_parts = _ip_fixed_parts(ip_head, is_v4)
    seq0 = _U32.unpack_from(tcp_head, 4)[0]
    doff, flags0 = tcp_head[12], tcp_head[13]
    tcp_parts = (tcp_head[:4], tcp_head[8:12], tcp_head[14:16], tcp_head[18:])
    tcp_fixed = word_sum(b"".join(tcp_parts))  # all but seq, offset/flags and checksum
    step = mss * segs_per_piece
    pieces: list[Piece] = []
    offset = hdr_len
    seg_index = 0
    while offset < total or not pieces:
        end = min(total, offset + step)
        size = end - offset
        seq = (seq0 + seg_index * mss) & 0xFFFFFFFF
        flags = flags0
        if end < total:
            flags &= ~(_TCP_FIN | _TCP_PSH)
        if seg_index:
            flags &= ~_TCP_CWR
        l4_len = thl + size
        if finish:
            tcp_sum = (pseudo_fixed + l4_len + tcp_fixed + (seq >> 16) + (seq & 0xFFFF) + (doff << 8 | flags)
                       + word_sum(pkt[offset:end]))
            tcp_check = 0xFFFF - fold(tcp_sum)
            hdr = _EMPTY
        else:
            tcp_check = fold(pseudo_fixed + l4_len)
            gso = size > mss
            hdr = VnetHdr(F_NEEDS_CSUM, vnet.gso_type if gso else GSO_NONE, hdr_len, mss if gso else 0, l4, 16)
        if is_v4:
            ip_len, ip_id = l4 + l4_len, (ip_id0 + seg_index) & 0xFFFF
            ip_check = 0xFFFF - fold(ip_fixed + ip_len + ip_id)
            data = head.pack(ip_parts[0], ip_len, ip_id, ip_parts[1], ip_check, ip_parts[2],
                             tcp_parts[0], seq, tcp_parts[1], doff, flags, tcp_parts[2], tcp_check, tcp_parts[3])
        else:
            data = head.pack(ip_parts[0], l4_len, ip_parts[1],
                             tcp_parts[0], seq, tcp_parts[1], doff, flags, tcp_parts[2], tcp_check, tcp_parts[3])
        pieces.append(Piece(hdr, data, offset, end))
        seg_index += segs_per_piece
        offset = end
    return pieces


def _ip_fixed_parts(ip_head: bytes, is_v4: bool) -> tuple[int, int, int, tuple[bytes, ...]]:
    """The IP header's parts that no segment changes: (first IPv4 id, checksum sum of the
    fixed words, pseudo-header sum without the length, the fixed byte runs)."""
    if is_v4:
        ip_id0 = _U16.unpack_from(ip_head, 4)[0]
        ip_fixed = word_sum(ip_head[:2] + ip_head[6:10] + ip_head[12:])  # all but length, id, checksum
        pseudo_fixed = int.from_bytes(ip_head[12:20], "big") + _PROTO_TCP
        return ip_id0, ip_fixed, pseudo_fixed, (ip_head[:2], ip_head[6:10], ip_head[12:])
    pseudo_fixed = int.from_bytes(ip_head[8:40], "big") + _PROTO_TCP
    return 0, 0, pseudo_fixed, (ip_head[:4], ip_head[6:])


_HEAD_STRUCTS: dict[tuple[bool, int, int], struct.Struct] = {}
_EMPTY = VnetHdr()


def _head_struct(is_v4: bool, l4: int, thl: int) -> struct.Struct:
    """IP + TCP header with the per-segment fields (lengths, id, checksums, seq, flags) unpacked."""
    found = _HEAD_STRUCTS.get((is_v4, l4, thl))
    if found is None:
        ip = f"2sHH4sH{l4 - 12}s" if is_v4 else "4sH34s"
        found = _HEAD_STRUCTS[(is_v4, l4, thl)] = struct.Struct(f"!{ip}4sI4sBB2sH{thl - 18}s")
    return found


def split_for_datagrams(vnet: VnetHdr, pkt: bytes | bytearray | memoryview,
                        limit: int = MAX_FAST_PACKET) -> list[Piece]:
    """Split an oversize super-packet into as few, evenly sized, GSO pieces as fit limit bytes."""
    if len(pkt) <= limit:
        raise WireError("packet fits; no split needed")
    if vnet.gso_type == GSO_NONE or vnet.gso_size <= 0:
        raise WireError(f"a {len(pkt)}-byte packet without GSO cannot be split")
    hdr_len, total = _tcp_layout(pkt)[1:]
    mss = vnet.gso_size
    nsegs = -(-(total - hdr_len) // mss)
    per_max = (limit - hdr_len) // mss
    if per_max <= 0:
        raise WireError("headers plus one segment exceed the datagram limit")
    npieces = -(-nsegs // per_max)
    return split_gso(vnet, pkt, -(-nsegs // npieces), finish=False)


def plain_packets(vnet: VnetHdr, pkt: bytearray | memoryview) -> list[Piece] | None:
    """Make what a vnet-header TUN gave us fit flannel's format.

    Returns None when pkt itself can be sent (its checksum finished in place if it was
    partial), else the MTU-sized pieces of a GSO super-packet.
    """
    if vnet.gso_type == GSO_NONE:
        if vnet.flags & F_NEEDS_CSUM:
            finish_checksum(pkt, vnet)
        return None
    return split_gso(vnet, pkt, 1, finish=True)


# --- ICMP --------------------------------------------------------------------------------


def net_unreachable(pkt: bytes | bytearray | memoryview, src: bytes) -> bytes | None:
    """ICMP "network unreachable" for IPv4 packet pkt, from src (4 bytes), as flannel answers.

    None where RFC 1122 says not to answer: ICMP error messages, non-first fragments.
    (flanneld stays silent about every ICMP packet, so a ping to a host-less subnet just
    times out there; we answer queries such as echo requests.)
    """
    if len(pkt) < 20 or pkt[0] >> 4 != 4:
        return None
    ihl = (pkt[0] & 0x0F) * 4
    if ihl < 20 or len(pkt) < ihl:
        return None
    if pkt[9] == _PROTO_ICMP and (len(pkt) <= ihl or pkt[ihl] in _ICMP_ERRORS):
        return None
    if _U16.unpack_from(pkt, 6)[0] & 0x1FFF:
        return None
    quoted = bytes(pkt[:ihl + 8])
    icmp = bytearray(struct.pack("!BBHI", 3, 0, 0, 0) + quoted)
    _U16.pack_into(icmp, 2, inet_checksum(icmp))
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, _PROTO_ICMP, 0,
                               src, bytes(pkt[12:16])))
    _U16.pack_into(ip, 10, inet_checksum(ip))
    return bytes(ip + icmp)
