"""Whether anyone but us changed the kernel's network state in a namespace since we last
looked: rtnetlink's multicast notifications of links, addresses, routes and permanent
neighbours/FDB entries, drained without blocking.

Why: a repair round at 5,000 vxlan peers reads three dumps of 5,000 objects (~150 ms of a
core); run every 2 s that alone is 7 % of a core on a host where nothing changes. Every
change that can make our tables drift is notified by the kernel: a route, neighbour or FDB
entry written or deleted, and a link or address change (which is also how routes flushed by
a link going down, or neighbours by a MAC change, show: those flushes send no message per
object). So a round with no notification since a clean one has nothing to repair; it is
skipped, and a full round still runs every FULL_ROUND_EVERY seconds in case a notification
never came (the socket could not be opened, or was recreated).

Not counted as a change:
- what our own rtnetlink socket wrote: the kernel sends route and neighbour notifications
  with the writer's port id (nlmsg_pid);
- vxlan FDB notifications carry port id 0 whoever wrote the entry: one that arrives while
  our own batch's acks were read (`after_own_write`) is taken as ours. Someone else's write
  in that same instant waits for the next full round;
- neighbours that are not permanent (ARP and bridge learning churn; ours are permanent).

An overflow of the receive buffer (ENOBUFS: notifications were lost) counts as a change.
"""

from __future__ import annotations

import errno
import socket

from ..errors import HostNetworkError
from .rtnl import _HDR, _NDMSG, AF_BRIDGE, NUD_PERMANENT, RTM_DELNEIGH, RTM_NEWNEIGH, SO_RCVBUFFORCE, socket_in

RTNLGRP_LINK, RTNLGRP_NEIGH, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV4_ROUTE = 1, 3, 5, 7
RTNLGRP_IPV6_IFADDR, RTNLGRP_IPV6_ROUTE = 9, 11
GROUPS = sum(1 << (group - 1) for group in (RTNLGRP_LINK, RTNLGRP_NEIGH, RTNLGRP_IPV4_IFADDR,
                                            RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_IFADDR, RTNLGRP_IPV6_ROUTE))
FULL_ROUND_EVERY = 30.0  # seconds: a full repair round at least this often, notified or not
RCVBUF = 1 << 20


def counts(kind: int, pid: int, payload: memoryview, own_pid: int, after_own_write: bool) -> bool:
    """Whether one notification is a change someone else made (see the module doc)."""
    if own_pid and pid == own_pid:
        return False
    if kind in (RTM_NEWNEIGH, RTM_DELNEIGH):
        if len(payload) < _NDMSG.size:
            return True
        family, _ifindex, state, _flags, _type = _NDMSG.unpack_from(payload)
        if not state & NUD_PERMANENT:
            return False
        if after_own_write and pid == 0 and family == AF_BRIDGE:
            return False
    return True


class KernelChanges:
    """One subscription in one namespace; `pending` stays set until its reader clears it (a
    full repair round starting: backends/base.py)."""

    def __init__(self, netns: str | None = None) -> None:
        try:
            self._sock = socket_in(netns)
            self._sock.bind((0, GROUPS))
        except OSError as exc:
            raise HostNetworkError(f"cannot subscribe to rtnetlink notifications: {exc}") from None
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except OSError:  # without CAP_NET_ADMIN: the sysctl limit; an overflow counts as a change
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self._sock.setblocking(False)
        self.pending = True  # nothing is known of the state before the subscription

    def note(self, own_pid: int = 0, after_own_write: bool = False) -> None:
        """Read every notification queued so far; set `pending` if one is a change."""
        while True:
            try:
                data = self._sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise HostNetworkError(f"reading rtnetlink notifications failed: {exc}") from None
                self.pending = True  # some were lost
                continue
            if not self.pending:
                self.pending = any(counts(kind, pid, payload, own_pid, after_own_write)
                                   for kind, pid, payload in notifications(data))

    def close(self) -> None:
        self._sock.close()


def notifications(data: bytes) -> list[tuple[int, int, memoryview]]:
    """(type, sender port id, payload) of every message in one datagram."""
    out = []
    view = memoryview(data)
    offset, end = 0, len(data)
    while offset + _HDR.size <= end:
        length, kind, _flags, _seq, pid = _HDR.unpack_from(data, offset)
        if length < _HDR.size:
            break
        out.append((kind, pid, view[offset + _HDR.size:offset + length]))
        offset += (length + 3) & ~3
    return out
