"""Raw rtnetlink for the peer tables: whole-table dumps parsed with struct, and many
route/neighbour/FDB writes sent in one sendmsg each chunk, their acks read afterwards.

Why not pyroute2 here: it decodes every attribute of every message into Python objects
and waits for each ack, so one repair round at 5,000 peers (15,000 objects) cost seconds
and programming them minutes. The kernel handles a batch of requests in one sendmsg just
as `ip -batch` sends them one by one, and answers each with its own ack (or error), so the
outcome per object stays exact. Devices, addresses and the rare lookups stay on pyroute2
(netlink.py); only the tables that grow with the number of peers come here.

Objects are plain values: routes by "a.b.c.d/len", neighbours by IP, FDB entries by MAC.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from ..errors import HostNetworkError

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # acks without a copy of the request: smaller, more fit in the buffer
SO_RCVBUFFORCE = 33
CLONE_NEWNET = 0x40000000

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP_INTR = 0x1, 0x2, 0x4, 0x10
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_CREATE = 0x100, 0x400
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE = 1, 4, 5, 6, 15
NDA_DST, NDA_LLADDR = 1, 2
AF_BRIDGE = 7
MAIN_TABLE, RTN_UNICAST, RT_SCOPE_UNIVERSE = 254, 1, 0
RTNH_F_ONLINK, NUD_PERMANENT, NTF_SELF = 0x04, 0x80, 0x02

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
_ATTR = struct.Struct("=HH")
# The kernel's usual layouts, read in one unpack: a neighbour (ndmsg, NDA_DST 4 bytes,
# NDA_LLADDR 6 bytes) and a vxlan FDB entry (ndmsg, NDA_LLADDR, NDA_DST); others are scanned.
_NEIGH_FAST = struct.Struct("=BxxxiHBBHH4sHH6sxx")
_FDB_FAST = struct.Struct("=BxxxiHBBHH6sxxHH4s")
_U32 = struct.Struct("=I")
_ERR = struct.Struct("=i")
CHUNK = 128  # requests per sendmsg: their acks (~1 KiB of buffer each) must fit the receive buffer
RCVBUF = 4 << 20
_GONE = (errno.ENOENT, errno.ESRCH)


class RouteSpec(NamedTuple):
    """An IPv4 unicast route of the main table, as the backends program it."""

    dst: str  # "a.b.c.d/len"
    gateway: str | None
    oif: int | None
    onlink: bool = False
    proto: int = 70


class Request(NamedTuple):
    """One write: its encoded message (seq 0, set when sent), what it is, the errnos that
    mean "already so"."""

    what: str
    body: bytes  # everything after nlmsghdr
    kind: int
    flags: int
    ok: tuple[int, ...]


def _attr(kind: int, data: bytes) -> bytes:
    size = 4 + len(data)
    return _ATTR.pack(size, kind) + data + b"\0" * (-size % 4)


def _split_dst(dst: str) -> tuple[bytes, int]:
    ip, _slash, plen = dst.partition("/")
    return socket.inet_aton(ip), int(plen)


def _mac(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


# ---- requests ---------------------------------------------------------------------------

def route_replace(route: RouteSpec) -> Request:
    addr, plen = _split_dst(route.dst)
    flags = RTNH_F_ONLINK if route.onlink else 0
    body = _RTMSG.pack(socket.AF_INET, plen, 0, 0, MAIN_TABLE, route.proto, RT_SCOPE_UNIVERSE, RTN_UNICAST, flags)
    body += _attr(RTA_DST, addr)
    if route.gateway:
        body += _attr(RTA_GATEWAY, socket.inet_aton(route.gateway))
    if route.oif:
        body += _attr(RTA_OIF, _U32.pack(route.oif))
    via = f" via {route.gateway}" if route.gateway else ""
    return Request(f"route {route.dst}{via} dev index {route.oif}", body, RTM_NEWROUTE,
                   NLM_F_CREATE | NLM_F_REPLACE, ())


def route_delete(dst: str, proto: int = 70) -> Request:
    """Only the route of protocol `proto` (the kernel matches it when it is given). Scope
    universe, as every route we program has (this kernel no longer reads NOWHERE as "any")."""
    addr, plen = _split_dst(dst)
    body = _RTMSG.pack(socket.AF_INET, plen, 0, 0, MAIN_TABLE, proto, RT_SCOPE_UNIVERSE, 0, 0) + _attr(RTA_DST, addr)
    return Request(f"deleting route {dst}", body, RTM_DELROUTE, 0, _GONE)


def neighbour_replace(index: int, ip: str, mac: str) -> Request:
    body = _NDMSG.pack(socket.AF_INET, index, NUD_PERMANENT, 0, 0)
    body += _attr(NDA_DST, socket.inet_aton(ip)) + _attr(NDA_LLADDR, _mac(mac))
    return Request(f"neighbour {ip} lladdr {mac}", body, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, ())


def neighbour_delete(index: int, ip: str) -> Request:
    body = _NDMSG.pack(socket.AF_INET, index, 0, 0, 0) + _attr(NDA_DST, socket.inet_aton(ip))
    return Request(f"deleting neighbour {ip}", body, RTM_DELNEIGH, 0, _GONE)


def fdb_replace(index: int, mac: str, dst: str) -> Request:
    """Rewrites the first remote of an existing MAC, or creates the entry (flanneld: NeighSet)."""
    body = _NDMSG.pack(AF_BRIDGE, index, NUD_PERMANENT, NTF_SELF, 0)
    body += _attr(NDA_LLADDR, _mac(mac)) + _attr(NDA_DST, socket.inet_aton(dst))
    return Request(f"FDB {mac} dst {dst}", body, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, ())


def fdb_delete(index: int, mac: str, dst: str) -> Request:
    body = _NDMSG.pack(AF_BRIDGE, index, 0, NTF_SELF, 0)
    body += _attr(NDA_LLADDR, _mac(mac)) + _attr(NDA_DST, socket.inet_aton(dst))
    return Request(f"deleting FDB {mac} dst {dst}", body, RTM_DELNEIGH, 0, _GONE)


# ---- the socket -------------------------------------------------------------------------

def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def socket_in(netns: str | None) -> socket.socket:
    """A NETLINK_ROUTE socket in the named netns (entered by this thread only, for the
    socket() call: a socket stays in the namespace it was made in), or in the current one."""
    if netns is None:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    if "/" in netns or netns in ("", ".", ".."):
        raise HostNetworkError(f"network namespace name {netns!r} is not a plain name")
    mine = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
            finally:
                _setns(mine)
        finally:
            os.close(target)
    finally:
        os.close(mine)


class Rtnl:
    """One rtnetlink socket: dumps and batched writes. Not thread-safe (the backends hold
    their lock around it)."""

    def __init__(self, netns: str | None = None) -> None:
        where = f"network namespace {netns!r}" if netns else "the current network namespace"
        try:
            self._sock = socket_in(netns)
        except OSError as exc:
            raise HostNetworkError(f"cannot open netlink in {where}: {exc}") from None
        self._sock.bind((0, 0))
        self.portid = int(self._sock.getsockname()[0])  # the kernel's notifications of our writes carry it
        self._sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except OSError:  # without CAP_NET_ADMIN: the sysctl limit (smaller chunks still fit)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self._seq = 0
        self._route_memo: dict[bytes, RouteSpec | None] = {}

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _next_seq(self) -> int:
        self._seq = self._seq % 0x7FFFFFFF + 1
        return self._seq

    # ---- writes ---------------------------------------------------------------------------

    def run(self, requests: Sequence[Request]) -> list[str]:
        """Send every request (chunks of CHUNK per sendmsg), read every ack. Returns the
        failures, one line each naming the object; "already so" answers are no failure."""
        errors: list[str] = []
        for start in range(0, len(requests), CHUNK):
            chunk = requests[start:start + CHUNK]
            by_seq: dict[int, Request] = {}
            parts = []
            for req in chunk:
                seq = self._next_seq()
                by_seq[seq] = req
                parts.append(_HDR.pack(16 + len(req.body), req.kind, NLM_F_REQUEST | NLM_F_ACK | req.flags, seq, 0))
                parts.append(req.body)
            self._send(b"".join(parts))
            for seq, code in self._acks(set(by_seq)):
                req = by_seq[seq]
                if code and code not in req.ok:
                    errors.append(f"{req.what} failed: {os.strerror(code)} ({errno.errorcode.get(code, code)})")
        return errors

    def _send(self, data: bytes) -> None:
        try:
            self._sock.send(data)
        except OSError as exc:
            raise HostNetworkError(f"sending netlink requests failed: {exc}") from None

    def _acks(self, waiting: set[int]) -> Iterator[tuple[int, int]]:
        """(seq, errno or 0) for every seq in `waiting`."""
        while waiting:
            for kind, _flags, seq, payload in self._recv():
                if kind == NLMSG_ERROR and seq in waiting:
                    waiting.discard(seq)
                    yield seq, -_ERR.unpack_from(payload)[0]

    def _recv(self) -> list[tuple[int, int, int, memoryview]]:
        try:
            data = self._sock.recv(1 << 20)
        except OSError as exc:  # ENOBUFS: acks were lost; the caller's next round repairs
            raise HostNetworkError(f"reading netlink answers failed: {exc}") from None
        return messages(data)

    # ---- dumps ----------------------------------------------------------------------------

    def _dump(self, what: str, kind: int, body: bytes) -> list[bytes]:
        """The payloads of one dump, retried when a concurrent change interrupted it."""
        for _attempt in range(5):
            seq = self._next_seq()
            self._send(_HDR.pack(16 + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
            payloads: list[bytes] = []
            interrupted = done = False
            while not done:
                for mkind, flags, mseq, payload in self._recv():
                    if mseq != seq:
                        continue
                    interrupted |= bool(flags & NLM_F_DUMP_INTR)
                    if mkind == NLMSG_DONE:
                        done = True
                    elif mkind == NLMSG_ERROR:
                        code = -_ERR.unpack_from(payload)[0]
                        raise HostNetworkError(f"reading {what} failed: {os.strerror(code)}")
                    else:
                        payloads.append(payload.tobytes())
            if not interrupted:
                return payloads
        raise HostNetworkError(f"reading {what} failed: interrupted 5 times by changes")

    def routes(self) -> dict[str, RouteSpec]:
        """IPv4 unicast routes of the main table with metric 0 and tos 0, by destination
        (the ones a `replace` of ours would hit; routes with other metrics are their owners').
        An IPv4 route message holds no timestamps: one seen in the last dump is not decoded
        again."""
        found: dict[str, RouteSpec] = {}
        memo: dict[bytes, RouteSpec | None] = {}
        last = self._route_memo
        for msg in self._dump("routes", RTM_GETROUTE, _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)):
            route = last[msg] if msg in last else route_of(memoryview(msg))
            memo[msg] = route
            if route is not None:
                found.setdefault(route.dst, route)
        self._route_memo = memo
        return found

    def neighbours(self, index: int) -> dict[str, str]:
        """Permanent IPv4 neighbours on a device: ip -> lladdr (lower case)."""
        found: dict[str, str] = {}
        for msg in self._dump("neighbours", RTM_GETNEIGH, _NDMSG.pack(socket.AF_INET, 0, 0, 0, 0)):
            fast = _NEIGH_FAST.unpack_from(msg) if len(msg) >= _NEIGH_FAST.size else None
            if fast is not None and fast[5:7] == (8, NDA_DST) and fast[8:10] == (10, NDA_LLADDR):
                _fam, ifindex, state, _flags, _type, _l1, _t1, dst, _l2, _t2, lladdr = fast
            else:  # another layout: scan the attributes
                _fam, ifindex, state, _flags, _type = _NDMSG.unpack_from(msg)
                dst, lladdr = _pick(memoryview(msg), _NDMSG.size, NDA_DST, NDA_LLADDR)
            if ifindex == index and state & NUD_PERMANENT and dst is not None and len(dst) == 4:
                found[socket.inet_ntoa(dst)] = lladdr.hex(":") if lladdr is not None else ""
        return found

    def fdb(self, index: int) -> dict[str, set[str]]:
        """A vxlan device's FDB entries with an IPv4 remote: mac -> remote IPs."""
        found: dict[str, set[str]] = {}
        for msg in self._dump("FDB", RTM_GETNEIGH, _NDMSG.pack(AF_BRIDGE, 0, 0, 0, 0)):
            fast = _FDB_FAST.unpack_from(msg) if len(msg) >= _FDB_FAST.size else None
            if fast is not None and fast[5:7] == (10, NDA_LLADDR) and fast[8:10] == (8, NDA_DST):
                ifindex, lladdr, dst = fast[1], fast[7], fast[10]
            else:  # another layout (a remote netns id first, no MAC...): scan the attributes
                ifindex = _NDMSG.unpack_from(msg)[1]
                dst, lladdr = _pick(memoryview(msg), _NDMSG.size, NDA_DST, NDA_LLADDR)
            if ifindex == index and dst is not None and len(dst) == 4 and lladdr:
                found.setdefault(lladdr.hex(":"), set()).add(socket.inet_ntoa(dst))
        return found


def messages(data: bytes) -> list[tuple[int, int, int, memoryview]]:
    """(type, flags, seq, payload) of every netlink message in one datagram."""
    out = []
    view = memoryview(data)
    offset, end = 0, len(data)
    while offset + 16 <= end:
        length, kind, flags, seq, _pid = _HDR.unpack_from(data, offset)
        if length < 16:
            break
        out.append((kind, flags, seq, view[offset + 16:offset + length]))
        offset += (length + 3) & ~3
    return out


def route_of(msg: memoryview) -> RouteSpec | None:
    """The route of an RTM_NEWROUTE payload, when it is an IPv4 unicast route of the main
    table with tos 0 and metric 0; else None. (Read every repair round for every route: the
    attributes are scanned once, only the five that matter are kept.)"""
    family, dst_len, _src, tos, table, proto, _scope, rtype, flags = _RTMSG.unpack_from(msg)
    if family != socket.AF_INET or rtype != RTN_UNICAST or tos:
        return None
    dst = gateway = None
    oif = None
    offset, end = _RTMSG.size, len(msg)
    while offset + 4 <= end:
        size, kind = _ATTR.unpack_from(msg, offset)
        if size < 4:
            break
        kind &= 0x3FFF
        if kind == RTA_DST and size == 8:
            dst = socket.inet_ntoa(msg[offset + 4:offset + 8])
        elif kind == RTA_GATEWAY and size == 8:
            gateway = socket.inet_ntoa(msg[offset + 4:offset + 8])
        elif kind == RTA_OIF and size == 8:
            oif = _U32.unpack_from(msg, offset + 4)[0]
        elif kind == RTA_TABLE and size == 8:
            table = _U32.unpack_from(msg, offset + 4)[0]
        elif kind == RTA_PRIORITY and size == 8 and _U32.unpack_from(msg, offset + 4)[0]:
            return None
        offset += (size + 3) & ~3
    if table != MAIN_TABLE:
        return None
    return RouteSpec(f"{dst or '0.0.0.0'}/{dst_len}", gateway, oif, bool(flags & RTNH_F_ONLINK), proto)


def _pick(msg: memoryview, offset: int, first: int, second: int) -> tuple[bytes | None, bytes | None]:
    """Two top-level attributes of a message body (None when absent), without decoding the
    others: neighbour dumps are read every repair round, and most of their bytes are
    cache timestamps."""
    found: list[bytes | None] = [None, None]
    end = len(msg)
    while offset + 4 <= end:
        size, kind = _ATTR.unpack_from(msg, offset)
        if size < 4:
            break
        kind &= 0x3FFF
        if kind == first or kind == second:
            found[kind != first] = bytes(msg[offset + 4:offset + size])
        offset += (size + 3) & ~3
    return found[0], found[1]


def _attrs(msg: memoryview, offset: int) -> dict[int, bytes]:
    """The top-level attributes of a message body from `offset`, by type (nested ones raw)."""
    attrs: dict[int, bytes] = {}
    end = len(msg)
    offset = (offset + 3) & ~3
    while offset + 4 <= end:
        size, kind = _ATTR.unpack_from(msg, offset)
        if size < 4:
            break
        attrs[kind & 0x3FFF] = bytes(msg[offset + 4:offset + size])
        offset += (size + 3) & ~3
    return attrs
