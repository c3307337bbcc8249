"""lease: the value under <prefix>/subnets/<key>, byte for byte as flannel (Go encoding/json) writes it."""

from __future__ import annotations

import json

import netaddr
import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import LeaseError
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.lease import (
    MEMO_VALUE_MAX,
    Lease,
    LeaseAttrs,
    Malformed,
    parse_kv,
)

VXLAN_DATA = {"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"}

# (attrs, the bytes flannel stores for the same lease)
FLANNEL_VALUES = [
    pytest.param(
        LeaseAttrs("192.168.81.4", None, "vxlan", dict(VXLAN_DATA)),
        '{"PublicIP":"192.168.81.4","PublicIPv6":null,"BackendType":"vxlan",'
        '"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}',
        id="vxlan",
    ),
    pytest.param(LeaseAttrs("192.168.81.4"), '{"PublicIP":"192.168.81.4","PublicIPv6":null}', id="udp"),
    pytest.param(
        LeaseAttrs("192.168.81.4", backend_type="host-gw"),
        '{"PublicIP":"192.168.81.4","PublicIPv6":null,"BackendType":"host-gw"}',
        id="host-gw",
    ),
    pytest.param(
        LeaseAttrs("10.0.0.7", "fc00::7", "vxlan", {"VNI": 4096, "VtepMAC": "0e:00:00:00:00:07"}),
        '{"PublicIP":"10.0.0.7","PublicIPv6":"fc00::7","BackendType":"vxlan",'
        '"BackendData":{"VNI":4096,"VtepMAC":"0e:00:00:00:00:07"}}',
        id="vxlan-dual-stack",
    ),
    pytest.param(
        LeaseAttrs("10.0.0.7", "fc00::7", "host-gw"),
        '{"PublicIP":"10.0.0.7","PublicIPv6":"fc00::7","BackendType":"host-gw"}',
        id="host-gw-dual-stack",
    ),
]


@pytest.mark.parametrize(("attrs", "wire"), FLANNEL_VALUES)
def test_to_json_is_byte_identical_to_flannel(attrs, wire):
    assert attrs.to_json() == wire
    assert attrs.to_json().encode() == wire.encode("ascii")


@pytest.mark.parametrize(("attrs", "wire"), FLANNEL_VALUES)
def test_from_json_reads_flannels_value(attrs, wire):
    assert LeaseAttrs.from_json(wire) == attrs
    assert LeaseAttrs.from_json(wire.encode()) == attrs


def test_empty_backend_data_is_left_out():
    assert LeaseAttrs("192.168.81.4", None, "", None).to_json() == '{"PublicIP":"192.168.81.4","PublicIPv6":null}'
    assert LeaseAttrs("192.168.81.4", None, "udp", {}).to_json() == (
        '{"PublicIP":"192.168.81.4","PublicIPv6":null,"BackendType":"udp"}')


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # flannel before PublicIPv6 existed
        ('{"PublicIP":"192.168.1.147"}', LeaseAttrs("192.168.1.147")),
        # dual-stack vxlan lease from flanneld: BackendV6Data is tolerated
        ('{"PublicIP":"10.0.0.1","PublicIPv6":"fc00::1","BackendType":"vxlan","BackendData":{"VNI":1,'
         '"VtepMAC":"aa:bb:cc:dd:ee:01"},"BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02"}}',
         LeaseAttrs("10.0.0.1", "fc00::1", "vxlan", {"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:01"})),
        # keys in any case, as Go's encoding/json matches them
        ('{"publicip":"10.0.0.2","PUBLICIPV6":null,"backendtype":"host-gw"}', LeaseAttrs("10.0.0.2", None, "host-gw")),
        ('{"publicIP":"10.0.0.3","BackendTYPE":"vxlan","backendData":{"VNI":7,"VtepMAC":"aa:aa:aa:aa:aa:aa"}}',
         LeaseAttrs("10.0.0.3", None, "vxlan", {"VNI": 7, "VtepMAC": "aa:aa:aa:aa:aa:aa"})),
        # whitespace and key order do not matter
        ('{ "BackendType" : "host-gw" ,\n "PublicIP" : "10.0.0.4" }', LeaseAttrs("10.0.0.4", None, "host-gw")),
        ('{"PublicIP":"10.0.0.5","BackendType":null,"BackendData":null}', LeaseAttrs("10.0.0.5")),
    ],
)
def test_from_json_accepts_flannel_variants(raw, expected):
    assert LeaseAttrs.from_json(raw) == expected


def test_rewritten_value_is_flannels_canonical_form():
    raw = '{ "backendtype":"vxlan", "publicip":"192.168.81.4", "backenddata":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"} }'
    assert LeaseAttrs.from_json(raw).to_json() == (
        '{"PublicIP":"192.168.81.4","PublicIPv6":null,"BackendType":"vxlan",'
        '"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}')


@pytest.mark.parametrize(
    ("raw", "needles"),
    [
        ("", ["not valid JSON", "''"]),
        ("{", ["not valid JSON", "'{'"]),
        ('{"PublicIP":"10.0.0.1"', ["not valid JSON"]),
        ('{"PublicIP":"10.0.0.1"} trailing', ["not valid JSON", "trailing"]),
        (b"\xff\x00", ["not valid JSON"]),
        ("[]", ["JSON object", "[]"]),
        ("null", ["JSON object", "null"]),
        ('"10.0.0.1"', ["JSON object", "10.0.0.1"]),
        ("{}", ["PublicIP", "None"]),
        ('{"PublicIP":null}', ["PublicIP", "None"]),
        ('{"PublicIP":"300.1.1.1"}', ["PublicIP", "300.1.1.1"]),
        ('{"PublicIP":"10.0.0"}', ["PublicIP", "10.0.0"]),
        ('{"PublicIP":"010.0.0.1"}', ["PublicIP", "010.0.0.1"]),
        ('{"PublicIP":"fc00::1"}', ["PublicIP", "fc00::1"]),
        ('{"PublicIP":"10.0.0.1/24"}', ["PublicIP", "10.0.0.1/24"]),
        ('{"PublicIP":167772161}', ["PublicIP", "167772161"]),
        ('{"PublicIP":"10.0.0.1","PublicIPv6":5}', ["PublicIPv6", "5"]),
        ('{"PublicIP":"10.0.0.1","BackendType":5}', ["BackendType", "5"]),
        ('{"PublicIP":"10.0.0.1","BackendType":["vxlan"]}', ["BackendType", "['vxlan']"]),
        ('{"PublicIP":"10.0.0.1","BackendData":[1]}', ["BackendData", "[1]"]),
        ('{"PublicIP":"10.0.0.1","BackendData":"VNI=1"}', ["BackendData", "VNI=1"]),
    ],
)
def test_malformed_values_name_the_key_and_value(raw, needles):
    with pytest.raises(LeaseError) as info:
        LeaseAttrs.from_json(raw, where="lease 10.5.72.0-24")
    message = str(info.value)
    assert "lease 10.5.72.0-24" in message
    for needle in needles:
        assert needle in message, f"{needle!r} missing from {message!r}"


@pytest.mark.parametrize("public_ipv6", ["not-an-ip", "10.0.0.1", "fc00::1/64", ""])
def test_public_ipv6_must_be_an_ipv6_address(public_ipv6):
    raw = json.dumps({"PublicIP": "10.0.0.1", "PublicIPv6": public_ipv6})
    with pytest.raises(LeaseError) as info:
        LeaseAttrs.from_json(raw)
    assert "PublicIPv6" in str(info.value)


@pytest.mark.parametrize("backend_type", [False, 0])
def test_falsy_non_string_backend_type_is_an_error(backend_type):
    with pytest.raises(LeaseError, match="BackendType"):
        LeaseAttrs.from_json(json.dumps({"PublicIP": "10.0.0.1", "BackendType": backend_type}))


# --------------------------------------------------------------------------- Lease.from_kv


def test_from_kv_lease():
    wire = FLANNEL_VALUES[0].values[1]
    lease = Lease.from_kv("10.5.72.0-24", wire.encode(), etcd_lease_id=0x1234, mod_revision=99)
    assert lease.subnet == netaddr.IPNetwork("10.5.72.0/24")
    assert lease.ipv6_subnet is None
    assert lease.attrs == LeaseAttrs("192.168.81.4", None, "vxlan", dict(VXLAN_DATA))
    assert (lease.etcd_lease_id, lease.mod_revision) == (0x1234, 99)
    assert lease.key == "10.5.72.0-24"
    assert lease.is_reservation is False


def test_from_kv_reservation_and_dual_stack():
    lease = Lease.from_kv("10.5.9.0-24&fc00:0:0:9::-64", b'{"PublicIP":"10.0.0.9","PublicIPv6":"fc00::9"}')
    assert lease.is_reservation is True
    assert lease.subnet == netaddr.IPNetwork("10.5.9.0/24")
    assert lease.ipv6_subnet == netaddr.IPNetwork("fc00:0:0:9::/64")
    assert lease.key == "10.5.9.0-24&fc00:0:0:9::-64"
    assert lease.attrs.public_ipv6 == "fc00::9"


def test_from_kv_bad_key():
    with pytest.raises(LeaseError, match="10.5.72.1-24"):
        Lease.from_kv("10.5.72.1-24", b'{"PublicIP":"10.0.0.1"}')


@pytest.mark.parametrize("value", [b"{", b"[]", b'{"PublicIP":"nope"}'])
def test_from_kv_bad_value_names_the_key(value):
    with pytest.raises(LeaseError) as info:
        Lease.from_kv("10.5.72.0-24", value)
    assert "10.5.72.0-24" in str(info.value)


def test_a_lease_listed_again_unchanged_is_not_parsed_again():
    value = b'{"PublicIP":"192.168.81.11","PublicIPv6":null,"BackendType":"host-gw"}'
    first = parse_kv("10.5.7.0-24", value, 7, 40, 39)
    assert isinstance(first, Lease) and parse_kv("10.5.7.0-24", bytes(value), 7, 40, 39) is first
    rewritten = parse_kv("10.5.7.0-24", value, 7, 41, 39)
    assert rewritten == Lease(netaddr.IPNetwork("10.5.7.0/24"), first.attrs, 7, 41, None, 39) and rewritten is not first


def test_a_value_larger_than_a_lease_is_parsed_each_time_and_never_kept():
    value = b'{"PublicIP":"' + b"1" * MEMO_VALUE_MAX + b'"}'
    first = parse_kv("10.5.8.0-24", value)
    assert isinstance(first, Malformed) and parse_kv("10.5.8.0-24", value) is not first


def test_a_listing_merged_with_what_changed_takes_the_new_keys_and_keeps_the_deleted_ones_taken():
    from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.lease import Listing

    def lease(subnet: str, ip: str, revision: int) -> Lease:
        return Lease(netaddr.IPNetwork(subnet), LeaseAttrs(ip), 7, revision, create_revision=revision)

    before = Listing([lease("10.1.1.0/24", "192.168.81.1", 3), lease("10.1.2.0/24", "192.168.81.2", 4)], 4,
                     [Malformed("10.1.3.0-24", "not valid JSON", netaddr.IPNetwork("10.1.3.0/24"))], "/p/subnets/")
    changed = Listing([lease("10.1.2.0/24", "192.168.81.9", 6), lease("10.1.3.0/24", "192.168.81.3", 7)], 8)
    merged = before.merged(changed)
    assert merged.revision == 8 and merged.prefix == "/p/subnets/"
    # 10.1.2.0 rewritten, the malformed 10.1.3.0 now a lease, 10.1.1.0 (maybe deleted since) still there
    assert sorted((str(x.subnet), x.attrs.public_ip) for x in merged.leases) == [
        ("10.1.1.0/24", "192.168.81.1"), ("10.1.2.0/24", "192.168.81.9"), ("10.1.3.0/24", "192.168.81.3")]
    assert merged.malformed == []
    assert sorted(map(str, merged.taken)) == ["10.1.1.0/24", "10.1.2.0/24", "10.1.3.0/24"]
