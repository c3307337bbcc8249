"""udp_wire: framing, checksums, splitting and segmentation of GSO super-packets.

Every checksum is checked against a plain RFC 1071 word loop written here, independent of
the module's modulo-0xFFFF arithmetic.
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.udp import wire as w

SRC4, DST4 = bytes([10, 7, 1, 2]), bytes([10, 7, 2, 2])
SRC6 = bytes.fromhex("fd000000000000000000000000000102")
DST6 = bytes.fromhex("fd000000000000000000000000000202")
TS_OPTION = bytes([1, 1, 8, 10]) + bytes(8)  # NOP NOP timestamp: a 32-byte TCP header


def ref_sum(data: bytes) -> int:
    """RFC 1071: 16-bit words, end-around carry."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ref_checksum(data: bytes) -> int:
    return ~ref_sum(data) & 0xFFFF


def ref_pseudo(pkt: bytes, l4_len: int) -> bytes:
    if pkt[0] >> 4 == 4:
        return pkt[12:20] + bytes([0, pkt[9]]) + struct.pack("!H", l4_len)
    return pkt[8:40] + struct.pack("!I", l4_len) + bytes([0, 0, 0, pkt[6]])


def tcp_offset(pkt: bytes) -> int:
    return (pkt[0] & 0x0F) * 4 if pkt[0] >> 4 == 4 else 40


def tcp_checksum_ok(pkt: bytes) -> bool:
    l4 = tcp_offset(pkt)
    return ref_sum(ref_pseudo(pkt, len(pkt) - l4) + pkt[l4:]) == 0xFFFF


def ip_checksum_ok(pkt: bytes) -> bool:
    return ref_sum(pkt[:(pkt[0] & 0x0F) * 4]) == 0xFFFF


def make_tcp(payload: bytes, *, v6: bool = False, flags: int = 0x18, seq: int = 1000,
             ip_id: int = 0x1234, options: bytes = TS_OPTION, ip_options: bytes = b"",
             partial: bool = True) -> bytes:
    """A TCP packet; partial=True leaves the pseudo-header sum in the checksum field, as the
    kernel hands CHECKSUM_PARTIAL packets to a vnet-header TUN."""
    thl = 20 + len(options)
    tcp = bytearray(struct.pack("!HHIIBBHHH", 40000, 5201, seq, 777, (thl // 4) << 4, flags, 502, 0, 0)
                    + options + payload)
    if v6:
        ip = bytearray(struct.pack("!IHBB16s16s", 0x60000000, len(tcp), 6, 64, SRC6, DST6))
    else:
        ihl = 20 + len(ip_options)
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl // 4, 0, ihl + len(tcp), ip_id, 0x4000, 63, 6, 0,
                                   SRC4, DST4) + ip_options)
        struct.pack_into("!H", ip, 10, ref_checksum(bytes(ip)))
    pseudo = ref_pseudo(bytes(ip), len(tcp))
    if partial:
        struct.pack_into("!H", tcp, 16, ref_sum(pseudo))
    else:
        struct.pack_into("!H", tcp, 16, ref_checksum(pseudo + bytes(tcp)))
    return bytes(ip + tcp)


def gso_hdr(pkt: bytes, mss: int) -> w.VnetHdr:
    l4 = tcp_offset(pkt)
    thl = (pkt[l4 + 12] >> 4) * 4
    return w.VnetHdr(w.F_NEEDS_CSUM, w.GSO_TCPV4 if pkt[0] >> 4 == 4 else w.GSO_TCPV6, l4 + thl, mss, l4, 16)


def finish_ref(pkt: bytes, hdr: w.VnetHdr) -> bytes:
    """What the receiving kernel does with CHECKSUM_PARTIAL: sum from csum_start, store."""
    out = bytearray(pkt)
    struct.pack_into("!H", out, hdr.csum_start + hdr.csum_offset, ref_checksum(bytes(out[hdr.csum_start:])))
    return bytes(out)


def fields(pkt: bytes) -> dict[str, int]:
    l4 = tcp_offset(pkt)
    seq, = struct.unpack_from("!I", pkt, l4 + 4)
    out = {"seq": seq, "flags": pkt[l4 + 13], "len": len(pkt)}
    if pkt[0] >> 4 == 4:
        out["tot_len"], out["id"] = struct.unpack_from("!HH", pkt, 2)
    else:
        out["payload_len"], = struct.unpack_from("!H", pkt, 4)
    return out


# --- checksums -----------------------------------------------------------------------


@given(st.binary(min_size=1, max_size=3000))
def test_inet_checksum_matches_rfc1071(data: bytes) -> None:
    assert w.inet_checksum(data) == ref_checksum(data) or (not any(data) and w.inet_checksum(data) == 0xFFFF)


@given(st.binary(min_size=1, max_size=2000))
def test_word_sum_folds_like_end_around_carry(data: bytes) -> None:
    if any(data):
        assert w.fold(w.word_sum(data)) == ref_sum(data)


def test_checksum_of_words_summing_to_a_multiple_of_ffff() -> None:
    data = bytes.fromhex("fffe0001")  # sum 0xffff: checksum 0, as RFC 1071 gives
    assert w.inet_checksum(data) == ref_checksum(data) == 0


def test_pseudo_sum_v4_and_v6() -> None:
    for pkt in (make_tcp(b"x" * 10), make_tcp(b"x" * 10, v6=True)):
        assert w.fold(w.pseudo_sum(pkt, 42)) == ref_sum(ref_pseudo(pkt, 42))


# --- framing -------------------------------------------------------------------------


def test_fast_frame_round_trip_and_classification() -> None:
    pkt = make_tcp(b"hello")
    hdr = gso_hdr(pkt, 1400)
    frame = w.encode_fast(hdr, pkt)
    assert frame[:2] == w.FAST_MAGIC and frame[0] >> 4 == 0xF
    assert w.classify(frame) == w.KIND_FAST
    assert w.decode_fast(frame) == (hdr, pkt)
    assert w.classify(pkt) == w.KIND_PLAIN  # flannel's format: a bare IPv4 packet
    assert w.classify(make_tcp(b"", v6=True)) == w.KIND_PLAIN
    assert w.classify(b"") == w.KIND_BAD
    assert w.classify(b"\xf1\x02" + bytes(40)) == w.KIND_BAD  # unknown wire version
    assert w.classify(b"\x00\x01\x02") == w.KIND_BAD


def test_encode_fast_refuses_what_does_not_fit() -> None:
    with pytest.raises(w.WireError):
        w.encode_fast(w.VnetHdr(), bytes(w.MAX_FAST_PACKET + 1))
    assert len(w.encode_fast(w.VnetHdr(), bytes(w.MAX_FAST_PACKET))) == w.MAX_UDP_PAYLOAD


def test_vnet_header_layout() -> None:
    hdr = w.VnetHdr(1, 4, 72, 1400, 40, 16)
    assert hdr.pack() == bytes([1, 4, 72, 0]) + struct.pack("<HHH", 1400, 40, 16)
    assert w.VnetHdr.parse(b"xx" + hdr.pack(), 2) == hdr
    assert len(w.EMPTY_VNET_HDR) == w.VNET_HDR_LEN == 10


# --- segmentation into plain packets (flannel's format) --------------------------------


def check_segments(pkt: bytes, hdr: w.VnetHdr, pieces: list[w.Piece]) -> list[bytes]:
    l4 = tcp_offset(pkt)
    hdr_len = l4 + (pkt[l4 + 12] >> 4) * 4
    mss = hdr.gso_size
    out = [p.packet(pkt) for p in pieces]
    assert b"".join(seg[hdr_len:] for seg in out) == pkt[hdr_len:]
    orig = fields(pkt)
    for i, seg in enumerate(out):
        f = fields(seg)
        assert len(seg) - hdr_len <= mss
        assert f["seq"] == (orig["seq"] + i * mss) & 0xFFFFFFFF
        assert tcp_checksum_ok(seg), f"segment {i}: bad TCP checksum"
        if pkt[0] >> 4 == 4:
            assert f["tot_len"] == len(seg) and ip_checksum_ok(seg)
            assert f["id"] == (orig["id"] + i) & 0xFFFF
            assert seg[6:10] == pkt[6:10] and seg[12:l4] == pkt[12:l4]  # flags/frag, ttl, proto, addrs, options
        else:
            assert f["payload_len"] == len(seg) - 40 and seg[:4] == pkt[:4] and seg[6:40] == pkt[6:40]
        assert seg[l4 + 14:l4 + 16] == pkt[l4 + 14:l4 + 16]  # window
        assert seg[l4 + 18:hdr_len] == pkt[l4 + 18:hdr_len]  # urgent pointer + options
        assert p_is_plain(pieces[i])
    return out


def p_is_plain(piece: w.Piece) -> bool:
    return piece.vnet == w.VnetHdr()


@pytest.mark.parametrize("v6", [False, True])
def test_segment_super_packet_into_mtu_packets(v6: bool) -> None:
    mss = 1420
    pkt = make_tcp(os.urandom(mss * 45 + 333), v6=v6, flags=0x18 | 0x01 | 0x80)  # PSH FIN CWR
    hdr = gso_hdr(pkt, mss)
    pieces = w.plain_packets(hdr, bytearray(pkt))
    assert pieces is not None and len(pieces) == 46
    segs = check_segments(pkt, hdr, pieces)
    flags = [fields(s)["flags"] for s in segs]
    assert flags[0] == 0x10 | 0x80  # CWR only on the first, no FIN/PSH before the last
    assert all(f == 0x10 for f in flags[1:-1])
    assert flags[-1] == 0x18 | 0x01  # FIN/PSH only on the last


def test_segment_wraps_seq_and_ip_id() -> None:
    mss = 1000
    pkt = make_tcp(os.urandom(mss * 3), seq=0xFFFFFF00, ip_id=0xFFFF)
    segs = check_segments(pkt, gso_hdr(pkt, mss), w.split_gso(gso_hdr(pkt, mss), pkt, 1, finish=True))
    assert [fields(s)["seq"] for s in segs] == [0xFFFFFF00, 744, 1744]  # wrapped
    assert [fields(s)["id"] for s in segs] == [0xFFFF, 0, 1]


@pytest.mark.parametrize("ip_options", [bytes([1, 1, 1, 0]), bytes([1] * 19 + [0])])  # ihl 6, ihl 10
@pytest.mark.parametrize("tcp_options", [b"", TS_OPTION, bytes([1] * 40)])  # 20..60-byte TCP headers
def test_segment_keeps_ip_and_tcp_options(ip_options: bytes, tcp_options: bytes) -> None:
    mss = 500
    pkt = make_tcp(os.urandom(1234), ip_options=ip_options, options=tcp_options)
    check_segments(pkt, gso_hdr(pkt, mss), w.split_gso(gso_hdr(pkt, mss), pkt, 1, finish=True))
    check_gso_pieces(pkt, gso_hdr(pkt, mss), w.split_for_datagrams(gso_hdr(pkt, mss), pkt, 1200), 1200)


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=1, max_value=20000), st.integers(min_value=88, max_value=9000), st.booleans(),
       st.integers(min_value=0, max_value=0xFFFFFFFF), st.sampled_from([0x10, 0x18, 0x19, 0x90, 0x99]))
def test_segmentation_properties(size: int, mss: int, v6: bool, seq: int, flags: int) -> None:
    pkt = make_tcp(os.urandom(size), v6=v6, seq=seq, flags=flags)
    hdr = gso_hdr(pkt, mss)
    segs = check_segments(pkt, hdr, w.split_gso(hdr, pkt, 1, finish=True))
    assert len(segs) == -(-size // mss)
    ored = 0
    for s in segs:
        ored |= fields(s)["flags"]
    assert ored == flags


def test_non_gso_partial_packet_gets_its_checksum_finished_in_place() -> None:
    pkt = make_tcp(os.urandom(999))
    hdr = gso_hdr(pkt, 0)._replace(gso_type=w.GSO_NONE, gso_size=0)
    buf = bytearray(pkt)
    assert w.plain_packets(hdr, buf) is None
    assert tcp_checksum_ok(bytes(buf)) and bytes(buf) == finish_ref(pkt, hdr)


def test_finish_udp_checksum_never_writes_zero() -> None:
    # a UDP packet whose data makes the checksum come out as 0
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + 2, 1, 0, 64, 17, 0, SRC4, DST4))
    udp = bytearray(struct.pack("!HHHH", 1000, 2000, 10, 0) + b"\x00\x00")
    pseudo = ref_pseudo(bytes(ip), 10)
    need = ref_sum(pseudo + bytes(udp))  # choose data so the full sum becomes 0xffff
    struct.pack_into("!H", udp, 8, 0xFFFF - need)
    assert ref_checksum(pseudo + bytes(udp)) == 0
    struct.pack_into("!H", udp, 6, ref_sum(pseudo))
    pkt = bytearray(ip + udp)
    w.finish_checksum(pkt, w.VnetHdr(w.F_NEEDS_CSUM, 0, 0, 0, 20, 6))
    assert pkt[26:28] == b"\xff\xff"


def test_segmenting_refuses_what_it_cannot_handle() -> None:
    pkt = make_tcp(os.urandom(3000))
    with pytest.raises(w.WireError):
        w.split_gso(gso_hdr(pkt, 1000)._replace(gso_type=w.GSO_UDP_L4), pkt, 1, finish=True)
    with pytest.raises(w.WireError):
        w.split_gso(gso_hdr(pkt, 1000), pkt[:-1], 1, finish=True)  # truncated: length mismatch
    with pytest.raises(w.WireError):
        w.split_gso(gso_hdr(pkt, 0), pkt, 1, finish=True)
    udp = bytearray(pkt)
    udp[9] = 17
    with pytest.raises(w.WireError):
        w.split_gso(gso_hdr(pkt, 1000), bytes(udp), 1, finish=True)


# --- splitting oversize super-packets for the fast path --------------------------------


def check_gso_pieces(pkt: bytes, hdr: w.VnetHdr, pieces: list[w.Piece], limit: int) -> None:
    l4 = tcp_offset(pkt)
    hdr_len = l4 + (pkt[l4 + 12] >> 4) * 4
    mss = hdr.gso_size
    out = [p.packet(pkt) for p in pieces]
    assert all(len(o) <= limit for o in out)
    assert b"".join(o[hdr_len:] for o in out) == pkt[hdr_len:]
    segs_before = 0
    for i, (piece, o) in enumerate(zip(pieces, out, strict=True)):
        f = fields(o)
        assert f["seq"] == (fields(pkt)["seq"] + segs_before * mss) & 0xFFFFFFFF
        if pkt[0] >> 4 == 4:
            assert f["tot_len"] == len(o) and ip_checksum_ok(o)
            assert f["id"] == (fields(pkt)["id"] + segs_before) & 0xFFFF
        # the receiving kernel finishes the partial checksum: the result must be right
        assert piece.vnet.flags == w.F_NEEDS_CSUM
        assert piece.vnet.csum_start == l4 and piece.vnet.csum_offset == 16 and piece.vnet.hdr_len == hdr_len
        assert tcp_checksum_ok(finish_ref(o, piece.vnet)), f"piece {i}"
        if len(o) - hdr_len > mss:
            assert piece.vnet.gso_type == hdr.gso_type and piece.vnet.gso_size == mss
        else:
            assert piece.vnet.gso_type == w.GSO_NONE
        segs_before += -(-(len(o) - hdr_len) // mss)


@pytest.mark.parametrize("v6", [False, True])
def test_oversize_super_packet_splits_into_two_valid_gso_packets(v6: bool) -> None:
    mss = 1423
    pkt = make_tcp(os.urandom(46 * mss), v6=v6, flags=0x18 | 0x80)
    assert len(pkt) > w.MAX_FAST_PACKET  # the 65,507-byte catch
    hdr = gso_hdr(pkt, mss)
    pieces = w.split_for_datagrams(hdr, pkt)
    assert len(pieces) == 2
    check_gso_pieces(pkt, hdr, pieces, w.MAX_FAST_PACKET)
    first, second = (fields(p.packet(pkt))["flags"] for p in pieces)
    assert first == 0x10 | 0x80 and second == 0x18  # CWR first, PSH last
    assert all(len(w.encode_fast(p.vnet, p.packet(pkt))) <= w.MAX_UDP_PAYLOAD for p in pieces)


def test_gso_type_ecn_bit_is_kept_on_pieces() -> None:
    mss = 1000
    pkt = make_tcp(os.urandom(10 * mss))
    hdr = gso_hdr(pkt, mss)._replace(gso_type=w.GSO_TCPV4 | w.GSO_ECN)
    pieces = w.split_for_datagrams(hdr, pkt, limit=6000)
    check_gso_pieces(pkt, hdr, pieces, 6000)
    assert all(p.vnet.gso_type == w.GSO_TCPV4 | w.GSO_ECN for p in pieces)


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=2, max_value=40000), st.integers(min_value=100, max_value=3000),
       st.integers(min_value=3200, max_value=20000), st.booleans())
def test_split_properties(size: int, mss: int, limit: int, v6: bool) -> None:
    pkt = make_tcp(os.urandom(size), v6=v6)
    hdr = gso_hdr(pkt, mss)
    if len(pkt) <= limit:
        with pytest.raises(w.WireError):
            w.split_for_datagrams(hdr, pkt, limit)
        return
    pieces = w.split_for_datagrams(hdr, pkt, limit)
    check_gso_pieces(pkt, hdr, pieces, limit)
    assert len(pieces) == -(-size // (((limit - (len(pkt) - size)) // mss) * mss))  # as few as fit


def test_split_refuses_a_non_gso_packet() -> None:
    with pytest.raises(w.WireError):
        w.split_for_datagrams(w.VnetHdr(), bytes(70000))


# --- ICMP ----------------------------------------------------------------------------


def test_net_unreachable_like_flannel() -> None:
    pkt = make_tcp(b"abc", partial=False)
    src = bytes([10, 7, 1, 0])
    icmp = w.net_unreachable(pkt, src)
    assert icmp is not None
    assert ip_checksum_ok(icmp) and icmp[9] == 1
    assert icmp[12:16] == src and icmp[16:20] == pkt[12:16]
    assert icmp[20] == 3 and icmp[21] == 0  # destination unreachable / net unreachable
    assert ref_sum(icmp[20:]) == 0xFFFF
    assert icmp[28:] == pkt[:28]  # offender's IP header + 8 bytes
    assert struct.unpack_from("!H", icmp, 2)[0] == len(icmp)


def icmp_packet(icmp_type: int) -> bytes:
    icmp = bytes([icmp_type, 0, 0, 0]) + bytes(12)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0, SRC4, DST4))
    struct.pack_into("!H", ip, 10, ref_checksum(bytes(ip)))
    return bytes(ip) + icmp


def test_icmp_queries_are_answered_icmp_errors_are_not() -> None:
    assert w.net_unreachable(icmp_packet(8), bytes(4)) is not None  # echo request: ping learns why
    for error_type in (3, 4, 5, 11, 12):
        assert w.net_unreachable(icmp_packet(error_type), bytes(4)) is None  # RFC 1122 3.2.2


def test_no_icmp_about_later_fragments() -> None:
    pkt = bytearray(make_tcp(b"abc", partial=False))
    struct.pack_into("!H", pkt, 6, 0x2000 | 10)  # MF + offset 80
    assert w.net_unreachable(bytes(pkt), bytes(4)) is None
    assert w.net_unreachable(make_tcp(b"", v6=True), bytes(4)) is None
