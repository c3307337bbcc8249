"""subnet_key: flannel's `<prefix>/subnets/<key>` names, `A.B.C.D-LEN[&IPV6-LEN]`."""

from __future__ import annotations

import re

import netaddr
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import LeaseError
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.key import (
    decode_subnet_key,
    encode_subnet_key,
)

# A key as flannel writes it: dotted decimal without leading zeros, '-', prefix length.
_OCTET = r"(?:0|[1-9][0-9]{0,2})"
CANONICAL_V4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}-(?:[0-9]|[12][0-9]|3[0-2])")


def _networks(version: int):
    """A strategy factory: networks of IP *version*, any prefix length, host bits clear."""
    bits = 32 if version == 4 else 128

    @st.composite
    def networks(draw):
        prefix = draw(st.integers(0, bits))
        addr = draw(st.integers(0, 2**bits - 1))
        mask = (2**bits - 1) ^ (2 ** (bits - prefix) - 1)
        return netaddr.IPNetwork((addr & mask, prefix), version=version)

    return networks


ipv4_networks = _networks(4)
ipv6_networks = _networks(6)


def _octets(key: str) -> tuple[int, int, int, int, int]:
    addr, length = key.split("-")
    a, b, c, d = (int(x) for x in addr.split("."))
    return a, b, c, d, int(length)


@settings(max_examples=300, deadline=None)
@given(ipv4_networks())
def test_ipv4_round_trip_every_prefix_length(net):
    key = encode_subnet_key(net)
    assert CANONICAL_V4.fullmatch(key), key
    a, b, c, d, length = _octets(key)
    assert ((a << 24) | (b << 16) | (c << 8) | d, length) == (int(net.network), net.prefixlen)
    subnet, v6 = decode_subnet_key(key)
    assert v6 is None
    assert (int(subnet.ip), subnet.prefixlen, subnet.version) == (int(net.network), net.prefixlen, 4)
    assert encode_subnet_key(subnet) == key


@settings(max_examples=200, deadline=None)
@given(ipv4_networks(), ipv6_networks())
def test_dual_stack_round_trip(net4, net6):
    key = encode_subnet_key(net4, net6)
    v4_part, sep, v6_part = key.partition("&")
    assert sep == "&" and CANONICAL_V4.fullmatch(v4_part)
    addr6, _unused, len6 = v6_part.rpartition("-")
    assert netaddr.IPAddress(addr6, version=6) == net6.network and int(len6) == net6.prefixlen
    subnet, subnet6 = decode_subnet_key(key)
    assert (int(subnet.ip), subnet.prefixlen) == (int(net4.network), net4.prefixlen)
    assert (int(subnet6.ip), subnet6.prefixlen, subnet6.version) == (int(net6.network), net6.prefixlen, 6)
    assert encode_subnet_key(subnet, subnet6) == key


@pytest.mark.parametrize(
    ("v4", "v6", "key"),
    [
        ("10.5.72.0/24", None, "10.5.72.0-24"),
        ("0.0.0.0/0", None, "0.0.0.0-0"),
        ("255.255.255.255/32", None, "255.255.255.255-32"),
        ("10.5.72.0/24", "fc00::/64", "10.5.72.0-24&fc00::-64"),
        ("10.1.74.0/24", "fc00:0:0:5::/64", "10.1.74.0-24&fc00:0:0:5::-64"),
    ],
)
def test_known_keys(v4, v6, key):
    net4 = netaddr.IPNetwork(v4)
    net6 = netaddr.IPNetwork(v6) if v6 else None
    assert encode_subnet_key(net4, net6) == key
    subnet, subnet6 = decode_subnet_key(key)
    assert str(subnet) == v4
    assert (str(subnet6) if subnet6 is not None else None) == v6


def test_decode_gives_network_objects():
    subnet, subnet6 = decode_subnet_key("10.5.72.0-24&fc00::-64")
    assert subnet.ip == subnet.network and subnet6.ip == subnet6.network
    assert netaddr.IPAddress("10.5.72.200") in subnet
    assert netaddr.IPAddress("fc00::ffff") in subnet6


INVALID_KEYS = [
    "10.5.72.1-24",  # host bits
    "10.5.72.0-33",
    "10.5.72.0-99",
    "1.2.3-4",
    "1.2.3.4.5-32",
    "010.5.72.0-24",  # leading zero
    "10.5.072.0-24",
    "256.5.72.0-24",
    "",
    "-24",
    "10.5.72.0-",
    "10.5.72.0",
    "10.5.72.0/24",
    "10.5.72.0--24",
    "10.5.72.0-24x",
    "10.5.72.0-24 ",
    " 10.5.72.0-24",
    "10.5.72.0-24/",
    "10.5.72.0-24&",
    "10.5.72.0-24&fc00::",
    "10.5.72.0-24&fc00::1-64",  # IPv6 host bits
    "10.5.72.0-24&fc00::-129",
    "10.5.72.0-24&zz00::-64",
    "10.5.72.0-24&10.6.0.0-16",
    "10.5.72.0-24&fc00::-64&fd00::-64",
    "fc00::-64",
    "fc00::-64&10.5.72.0-24",
    "a.b.c.d-24",
]


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_keys_are_lease_errors_naming_the_key(key):
    with pytest.raises(LeaseError) as info:
        decode_subnet_key(key)
    assert repr(key) in str(info.value)


@pytest.mark.parametrize(
    "key",
    ["10.5.72.0-24\n", "10.5.72.0-24&fc00::-64\n", "10.5.72.0-\u0662\u0664", "10.5.72.0-24&fc00::-\u0666\u0664"],
)
def test_trailing_newline_and_non_ascii_digits_are_invalid(key):
    with pytest.raises(LeaseError):
        decode_subnet_key(key)
