"""Checks on flannel0's queue and the UDP socket handed over by the previous agent.

They arrive from systemd's fd store or from a keeper process: both only hold what some
earlier process gave them, so each descriptor is checked before the forwarder uses it: the
TUN queue must be attached to our device in our mode (TUNGETIFF), the socket must be an
IPv4 datagram socket bound to our public IP and the configured port. A descriptor that fails
is closed and the reason logged; the backend then opens fresh ones.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import struct

from ...host.tun import IFF_NO_PI, IFF_TUN, IFF_VNET_HDR

TUNGETIFF = 0x800454D2  # _IOR('T', 210, unsigned int)
_IFREQ = struct.Struct("16sH22x")
log = logging.getLogger(__name__)


def tun_problem(fd: int, name: str, vnet_hdr: bool) -> str | None:
    """Why fd is not a queue of TUN device name in this mode; None when it is."""
    try:
        raw = fcntl.ioctl(fd, TUNGETIFF, bytes(_IFREQ.size))
    except OSError as exc:
        return f"not an attached TUN queue (TUNGETIFF: {exc.strerror})"
    ifname, flags = _IFREQ.unpack(raw)
    got = ifname.rstrip(b"\0").decode(errors="replace")
    if got != name:
        return f"a queue of {got!r}, not {name!r}"
    if flags & (IFF_TUN | IFF_NO_PI) != IFF_TUN | IFF_NO_PI:
        return f"TUN flags {flags:#x} lack IFF_TUN|IFF_NO_PI"
    if bool(flags & IFF_VNET_HDR) != vnet_hdr:
        return f"vnet header {'on' if flags & IFF_VNET_HDR else 'off'}, wanted {'on' if vnet_hdr else 'off'}"
    return None


def socket_problem(fd: int, address: tuple[str, int]) -> str | None:
    """Why fd is not an IPv4 UDP socket bound to address; None when it is."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError as exc:
        return f"not a socket ({exc.strerror})"
    with sock:
        if sock.family != socket.AF_INET or sock.type != socket.SOCK_DGRAM:
            return f"a {sock.family.name}/{sock.type.name} socket, not AF_INET/SOCK_DGRAM"
        if sock.proto not in (0, socket.IPPROTO_UDP):
            return f"protocol {sock.proto}, not UDP"
        bound = sock.getsockname()
        if tuple(bound) != address:
            return f"bound to {bound[0]}:{bound[1]}, not {address[0]}:{address[1]}"
    return None


def accept(tun_fd: int, sock_fd: int, *, name: str, vnet_hdr: bool, address: tuple[str, int],
           source: str) -> bool:
    """True when both descriptors are ours to use; otherwise both are closed, with a log line."""
    problems = [f"TUN fd: {p}" for p in [tun_problem(tun_fd, name, vnet_hdr)] if p]
    problems += [f"socket fd: {p}" for p in [socket_problem(sock_fd, address)] if p]
    if not problems:
        return True
    log.warning("ignoring the descriptors from %s: %s; opening fresh ones", source, "; ".join(problems))
    for fd in (tun_fd, sock_fd):
        os.close(fd)
    return False
