"""recvmmsg/sendmmsg through ctypes: many datagrams per syscall (the stdlib has neither).

The message vectors are preallocated once; the hot loops only write lengths and pointers
through flat memoryviews of the C arrays, which is far cheaper than ctypes attribute access.
ctypes releases the GIL for the call, so the other forwarder thread runs meanwhile.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import sys
from typing import Final

MSG_WAITFORONE: Final = 0x10000
_RETRY = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)
SLOT = 65600  # > 2 + 10 + 65535: any packet a TUN (gso_max_size 64 KiB) or a datagram can hold


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


class SockAddrIn(ctypes.Structure):
    _fields_ = [
        ("sin_family", ctypes.c_ushort),
        ("sin_port", ctypes.c_uint16),  # network order
        ("sin_addr", ctypes.c_uint32),  # network order
        ("sin_zero", ctypes.c_uint8 * 8),
    ]


_SIZEOF_MMSG = ctypes.sizeof(_MMsgHdr)
_SIZEOF_PTR = ctypes.sizeof(ctypes.c_void_p)
_OFF_NAME = _MMsgHdr.msg_hdr.offset + _MsgHdr.msg_name.offset
_OFF_IOVLEN = _MMsgHdr.msg_hdr.offset + _MsgHdr.msg_iovlen.offset
_OFF_LEN = _MMsgHdr.msg_len.offset
_SIZEOF_SIN = ctypes.sizeof(SockAddrIn)
_OFF_SIN_ADDR = SockAddrIn.sin_addr.offset

_libc = ctypes.CDLL(None, use_errno=True)
_recvmmsg = _libc.recvmmsg
_recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
_recvmmsg.restype = ctypes.c_int
_sendmmsg = _libc.sendmmsg
_sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
_sendmmsg.restype = ctypes.c_int


def addr_key(ip: str) -> int:
    """An IPv4 address as RecvBatch.sources holds it (network-order bytes read as a native int)."""
    return int.from_bytes(socket.inet_aton(ip), sys.byteorder)


def key_addr(key: int) -> str:
    return socket.inet_ntoa(key.to_bytes(4, sys.byteorder))


def sockaddr(ip: str, port: int) -> SockAddrIn:
    sa = SockAddrIn()
    sa.sin_family = socket.AF_INET
    sa.sin_port = socket.htons(port)
    sa.sin_addr = addr_key(ip)
    return sa


class Arena:
    """A bytearray with a stable C address (for iovecs) and a memoryview over it."""

    def __init__(self, size: int) -> None:
        self.buf = bytearray(size)
        self._c = (ctypes.c_char * size).from_buffer(self.buf)
        self.addr: int = ctypes.addressof(self._c)
        self.view = memoryview(self.buf)


class RecvBatch:
    """count receive slots of slot bytes each; datagram i lands at arena offset i*slot+headroom."""

    def __init__(self, count: int, slot: int, headroom: int = 0) -> None:
        self.count, self.slot, self.headroom = count, slot, headroom
        self.arena = Arena(count * slot)
        self._names = (SockAddrIn * count)()
        self._iovs = (_IoVec * count)()
        self._msgs = (_MMsgHdr * count)()
        for i in range(count):
            self._iovs[i].iov_base = self.arena.addr + i * slot + headroom
            self._iovs[i].iov_len = slot - headroom
            hdr = self._msgs[i].msg_hdr
            hdr.msg_name = ctypes.addressof(self._names[i])
            hdr.msg_namelen = _SIZEOF_SIN
            hdr.msg_iov = ctypes.addressof(self._iovs[i])
            hdr.msg_iovlen = 1
        self._msgs_addr = ctypes.addressof(self._msgs)
        self.lengths = memoryview(self._msgs).cast("B").cast("I")
        self.sources = memoryview(self._names).cast("B").cast("I")
        # indexes into the views above, per slot
        self.len_index = [(i * _SIZEOF_MMSG + _OFF_LEN) // 4 for i in range(count)]
        self.src_index = [(i * _SIZEOF_SIN + _OFF_SIN_ADDR) // 4 for i in range(count)]

    def recv(self, fd: int) -> int:
        """Block (up to the socket's SO_RCVTIMEO) for one datagram, take what else is queued.

        Returns how many slots were filled; 0 on timeout/interrupt.
        """
        n = _recvmmsg(fd, self._msgs_addr, self.count, MSG_WAITFORONE, None)
        if n < 0:
            err = ctypes.get_errno()
            if err in _RETRY:
                return 0
            raise OSError(err, f"recvmmsg: {errno.errorcode.get(err, err)}")
        return n


class SendBatch:
    """Up to count datagrams, each one or two iovecs (header + payload slice), one sendmmsg."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.pending = 0
        self._iovs = (_IoVec * (2 * count))()
        self._msgs = (_MMsgHdr * count)()
        for i in range(count):
            hdr = self._msgs[i].msg_hdr
            hdr.msg_namelen = _SIZEOF_SIN
            hdr.msg_iov = ctypes.addressof(self._iovs) + 2 * i * ctypes.sizeof(_IoVec)
            hdr.msg_iovlen = 1
        self._msgs_addr = ctypes.addressof(self._msgs)
        self._msg_ptrs = memoryview(self._msgs).cast("B").cast("P")
        self._msg_sizes = memoryview(self._msgs).cast("B").cast("N")  # type: ignore[call-overload]  # size_t
        self._iov_ptrs = memoryview(self._iovs).cast("B").cast("P")
        self._iov_sizes = memoryview(self._iovs).cast("B").cast("N")  # type: ignore[call-overload]  # size_t
        self._name_index = [(i * _SIZEOF_MMSG + _OFF_NAME) // _SIZEOF_PTR for i in range(count)]
        self._iovlen_index = [(i * _SIZEOF_MMSG + _OFF_IOVLEN) // _SIZEOF_PTR for i in range(count)]

    @property
    def room(self) -> int:
        return self.count - self.pending

    def add(self, name_ptr: int, base: int, length: int, base2: int = 0, length2: int = 0) -> None:
        """Queue one datagram to the sockaddr at name_ptr; the memory must stay until flush()."""
        i = self.pending
        self._msg_ptrs[self._name_index[i]] = name_ptr
        j = 4 * i  # two iovecs of (base, len) per message
        self._iov_ptrs[j] = base
        self._iov_sizes[j + 1] = length
        if length2:
            self._iov_ptrs[j + 2] = base2
            self._iov_sizes[j + 3] = length2
            self._msg_sizes[self._iovlen_index[i]] = 2
        else:
            self._msg_sizes[self._iovlen_index[i]] = 1
        self.pending = i + 1

    def flush(self, fd: int) -> tuple[int, int]:
        """Send everything queued; returns (sent, failed). A failing datagram is skipped."""
        sent = failed = 0
        todo = self.pending
        while sent + failed < todo:
            done = sent + failed
            n = _sendmmsg(fd, self._msgs_addr + done * _SIZEOF_MMSG, todo - done, 0)
            if n > 0:
                sent += n
                continue
            err = ctypes.get_errno()
            if n < 0 and err == errno.EINTR:
                continue
            failed += 1  # e.g. ENETUNREACH, EMSGSIZE for this one datagram: skip it
        self.pending = 0
        return sent, failed
