"""Which rtnetlink notifications make the next repair round a full one
(host/kernel_changes.py); the subscription itself is exercised in a namespace by
tests/integration/backends/test_vxlan.py and test_hostgw.py."""

from __future__ import annotations

import socket
import struct

from ansible_collections.overlaynet.flannel.plugins.module_utils.host import kernel_changes, rtnl

OURS = 4242


def message(kind: int, pid: int, body: bytes) -> bytes:
    frame = struct.pack("=IHHII", 16 + len(body), kind, 0, 0, pid) + body
    return frame + b"\0" * (-len(frame) % 4)


def neighbour(family: int, state: int) -> bytes:
    return struct.pack("=BxxxiHBB", family, 3, state, 0, 0)


def changed(kind: int, pid: int, body: bytes, after_own_write: bool = False) -> bool:
    [(got_kind, got_pid, payload)] = kernel_changes.notifications(message(kind, pid, body))
    assert (got_kind, got_pid) == (kind, pid)
    return kernel_changes.counts(got_kind, got_pid, payload, OURS, after_own_write)


def test_what_our_socket_wrote_is_not_a_change():
    assert not changed(rtnl.RTM_NEWROUTE, OURS, b"\0" * 12)
    assert not changed(rtnl.RTM_DELNEIGH, OURS, neighbour(socket.AF_INET, rtnl.NUD_PERMANENT))


def test_routes_links_and_permanent_neighbours_of_others_are_changes():
    assert changed(rtnl.RTM_DELROUTE, 0, b"\0" * 12)
    assert changed(rtnl.RTM_NEWROUTE, 777, b"\0" * 12)
    assert changed(16, 0, b"\0" * 16)  # RTM_NEWLINK: a device changed (routes flushed with it)
    assert changed(rtnl.RTM_DELNEIGH, 777, neighbour(socket.AF_INET, rtnl.NUD_PERMANENT))


def test_learnt_neighbours_are_churn_not_changes():
    reachable, stale = 0x02, 0x04
    assert not changed(rtnl.RTM_NEWNEIGH, 0, neighbour(socket.AF_INET, reachable))
    assert not changed(rtnl.RTM_NEWNEIGH, 0, neighbour(rtnl.AF_BRIDGE, stale))


def test_a_vxlan_fdb_note_carries_port_id_0_and_counts_unless_it_came_with_our_write():
    fdb = neighbour(rtnl.AF_BRIDGE, rtnl.NUD_PERMANENT)
    assert changed(rtnl.RTM_DELNEIGH, 0, fdb)
    assert not changed(rtnl.RTM_NEWNEIGH, 0, fdb, after_own_write=True)
    assert changed(rtnl.RTM_NEWNEIGH, 0, neighbour(socket.AF_INET, rtnl.NUD_PERMANENT), after_own_write=True)


def test_a_truncated_neighbour_note_counts_as_a_change():
    assert changed(rtnl.RTM_NEWNEIGH, 0, b"\0\0")


def test_one_datagram_holds_several_notes_and_a_bad_length_ends_it():
    data = message(rtnl.RTM_NEWROUTE, 1, b"\0" * 12) + message(rtnl.RTM_DELROUTE, 2, b"\0" * 13)
    assert [(kind, pid, len(body)) for kind, pid, body in kernel_changes.notifications(data)] == [
        (rtnl.RTM_NEWROUTE, 1, 12), (rtnl.RTM_DELROUTE, 2, 13)]
    broken = struct.pack("=IHHII", 3, rtnl.RTM_NEWROUTE, 0, 0, 0)
    assert kernel_changes.notifications(broken + data) == []
