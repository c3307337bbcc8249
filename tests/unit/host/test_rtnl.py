"""The raw rtnetlink codec: requests encode what the kernel expects, dumps decode back to
the same values (checked against the kernel in tests/integration/backends/test_rtnl.py)."""

from __future__ import annotations

import socket
import struct

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import HostNetworkError
from ansible_collections.overlaynet.flannel.plugins.module_utils.host import rtnl
from ansible_collections.overlaynet.flannel.plugins.module_utils.host.rtnl import RouteSpec


def framed(kind: int, body: bytes, seq: int = 9, flags: int = 0) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body


def test_a_route_request_decodes_to_the_same_route():
    route = RouteSpec("10.7.3.0/24", "10.7.3.0", 12, onlink=True, proto=70)
    request = rtnl.route_replace(route)
    assert request.kind == rtnl.RTM_NEWROUTE
    assert request.flags == rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE
    assert rtnl.route_of(memoryview(request.body)) == route


def test_routes_of_other_tables_metrics_or_types_are_not_ours_to_compare():
    base = rtnl.route_replace(RouteSpec("10.7.3.0/24", "192.168.1.9", 3)).body
    assert rtnl.route_of(memoryview(base)) is not None
    with_metric = base + rtnl._attr(rtnl.RTA_PRIORITY, struct.pack("=I", 100))
    other_table = base[:4] + bytes([100]) + base[5:]
    local_type = base[:7] + bytes([2]) + base[8:]  # RTN_LOCAL
    for body in (with_metric, other_table, local_type):
        assert rtnl.route_of(memoryview(body)) is None


def test_a_route_delete_names_only_our_protocol():
    body = rtnl.route_delete("10.7.3.0/24", 70).body
    family, dst_len, _src, _tos, table, proto, scope, _type, _flags = rtnl._RTMSG.unpack_from(body)
    assert (family, dst_len, table, proto, scope) == (socket.AF_INET, 24, 254, 70, 0)
    assert rtnl._pick(memoryview(body), rtnl._RTMSG.size, rtnl.RTA_DST, rtnl.RTA_GATEWAY) == (
        socket.inet_aton("10.7.3.0"), None)


def test_neighbour_and_fdb_requests_carry_the_device_ip_and_mac():
    neigh = rtnl.neighbour_replace(5, "10.7.3.0", "0e:AA:00:00:00:01").body
    assert rtnl._NDMSG.unpack_from(neigh) == (socket.AF_INET, 5, rtnl.NUD_PERMANENT, 0, 0)
    assert rtnl._pick(memoryview(neigh), 12, rtnl.NDA_DST, rtnl.NDA_LLADDR) == (
        socket.inet_aton("10.7.3.0"), bytes.fromhex("0eaa00000001"))
    fdb = rtnl.fdb_replace(5, "0e:aa:00:00:00:01", "192.168.1.9").body
    assert rtnl._NDMSG.unpack_from(fdb) == (rtnl.AF_BRIDGE, 5, rtnl.NUD_PERMANENT, rtnl.NTF_SELF, 0)
    assert rtnl._pick(memoryview(fdb), 12, rtnl.NDA_DST, rtnl.NDA_LLADDR) == (
        socket.inet_aton("192.168.1.9"), bytes.fromhex("0eaa00000001"))


def test_messages_splits_a_datagram_and_stops_at_a_bad_length():
    one = framed(rtnl.NLMSG_ERROR, struct.pack("=i", -17) + b"\0" * 16, seq=1)
    two = framed(rtnl.NLMSG_DONE, struct.pack("=i", 0), seq=2, flags=rtnl.NLM_F_MULTI)
    broken = struct.pack("=IHHII", 8, 0, 0, 3, 0)
    found = rtnl.messages(one + two + broken)
    assert [(kind, seq) for kind, _flags, seq, _payload in found] == [(rtnl.NLMSG_ERROR, 1), (rtnl.NLMSG_DONE, 2)]
    assert struct.unpack("=i", found[0][3][:4])[0] == -17


def test_pick_skips_unknown_attributes_and_survives_a_truncated_one():
    body = b"\0" * 12 + rtnl._attr(3, b"\1" * 20) + rtnl._attr(rtnl.NDA_LLADDR, b"\2" * 6)
    assert rtnl._pick(memoryview(body), 12, rtnl.NDA_DST, rtnl.NDA_LLADDR) == (None, b"\2" * 6)
    truncated = body + struct.pack("=HH", 2, rtnl.NDA_DST)
    assert rtnl._pick(memoryview(truncated), 12, rtnl.NDA_DST, rtnl.NDA_LLADDR) == (None, b"\2" * 6)


def test_a_namespace_name_with_a_path_is_refused():
    with pytest.raises(HostNetworkError, match="not a plain name"):
        rtnl.Rtnl("../../proc/1/ns/net")


def test_the_usual_neighbour_and_fdb_layouts_are_read_in_one_unpack():
    neigh = rtnl.neighbour_replace(5, "10.7.3.0", "0e:aa:00:00:00:01").body
    fast = rtnl._NEIGH_FAST.unpack_from(neigh)
    assert fast[1] == 5 and fast[5:7] == (8, rtnl.NDA_DST) and fast[8:10] == (10, rtnl.NDA_LLADDR)
    assert (socket.inet_ntoa(fast[7]), fast[10].hex(":")) == ("10.7.3.0", "0e:aa:00:00:00:01")
    fdb = rtnl.fdb_replace(5, "0e:aa:00:00:00:01", "192.168.1.9").body
    fast = rtnl._FDB_FAST.unpack_from(fdb)
    assert fast[5:7] == (10, rtnl.NDA_LLADDR) and fast[8:10] == (8, rtnl.NDA_DST)
    assert (fast[7].hex(":"), socket.inet_ntoa(fast[10])) == ("0e:aa:00:00:00:01", "192.168.1.9")
