"""Parsers that cannot crash: random bytes and random JSON (deep, wide, wrong types, huge
numbers, non-UTF-8) into the config, key and lease parsers and the agent's event handling
give a valid object or one clean FlannelError, never another exception."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.overlaynet.flannel.plugins.module_utils.agent.peers import PeerCache, select_where
from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import (
    QUOTE_LIMIT,
    ConfigError,
    FlannelError,
    LeaseError,
)
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.connection import EtcdConnection, EtcdSettings
from ansible_collections.overlaynet.flannel.plugins.module_utils.etcd.registry import LeaseRegistry
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.config import NetworkConfig
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.json_doc import MAX_DEPTH, MAX_DOCUMENT_BYTES
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.key import decode_subnet_key
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.lease import (
    Lease,
    LeaseAttrs,
    Malformed,
    parse_kv,
)

PREFIX = "/coreos.com/network/subnets/"
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                        st.text(max_size=20), st.integers(min_value=10**30, max_value=10**40))
json_values = st.recursive(json_leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)), max_leaves=30)
# Documents shaped like flannel's, with random values in the fields that matter.
lease_docs = st.fixed_dictionaries({}, optional={
    "PublicIP": json_values | st.sampled_from(["10.0.0.1", "0.0.0.0", "::1", "300.1.1.1"]),
    "PublicIPv6": json_values, "BackendType": json_values | st.sampled_from(["vxlan", "udp", ""]),
    "BackendData": json_values})
config_docs = st.fixed_dictionaries({}, optional={
    "Network": json_values | st.sampled_from(["10.5.0.0/16", "10.5.0.0/33", "0.0.0.0/0"]),
    "SubnetLen": json_values, "SubnetMin": json_values, "SubnetMax": json_values,
    "EnableIPv6": json_values, "IPv6Network": json_values,
    "Backend": json_values | st.fixed_dictionaries(
        {"Type": json_values}, optional={"VNI": json_values, "Port": json_values})})
raw_values = st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()),
                       lease_docs.map(lambda d: json.dumps(d).encode()))


def deep(depth: int, opener: str = "[") -> bytes:
    closer = "]" if opener == "[" else "}"
    inner = '{"a":' if opener == "{" else "["
    return (inner * depth + "1" + closer * depth).encode()


@FAST
@given(raw_values)
def test_lease_values_give_a_lease_or_a_lease_error(raw):
    try:
        attrs = LeaseAttrs.from_json(raw)
    except LeaseError as exc:
        assert len(str(exc)) < 2 * QUOTE_LIMIT + 400  # the value is quoted, cut
    else:
        assert isinstance(attrs.public_ip, str)


@FAST
@given(st.one_of(st.binary(max_size=300), config_docs.map(lambda d: json.dumps(d).encode()),
                 json_values.map(lambda v: json.dumps(v).encode())))
def test_config_values_give_a_config_or_a_config_error(raw):
    try:
        config = NetworkConfig.from_json(raw)
    except ConfigError:
        return
    assert config.effective()["Backend"]["Type"] in ("vxlan", "host-gw", "udp")


KEYISH = r"[0-9]{1,3}(\.[0-9]{1,3}){3}-[0-9]{1,3}(&[0-9a-f:]{1,40}-[0-9]{1,3})?"


@FAST
@given(st.one_of(st.text(max_size=60), st.from_regex(KEYISH, fullmatch=True)))
def test_keys_give_a_subnet_or_a_lease_error(key):
    try:
        subnet, _ipv6 = decode_subnet_key(key)
    except LeaseError:
        return
    assert subnet.ip == subnet.network


@FAST
@given(st.binary(max_size=80), raw_values)
def test_any_key_and_value_parse_to_a_lease_or_a_malformed_entry(key, raw):
    tail = key.decode("utf-8", "backslashreplace")
    found = parse_kv(tail, raw)
    assert isinstance(found, (Lease, Malformed))
    if isinstance(found, Malformed):
        assert found.reason


@pytest.mark.parametrize("raw", [deep(1000), deep(1000, "{"), deep(MAX_DEPTH + 1), b"[" * 60_000,
                                 b'{"PublicIP":"10.0.0.1","BackendData":' + deep(5000) + b"}"],
                         ids=["list-1000", "dict-1000", "one-too-deep", "unclosed", "deep-backend-data"])
def test_deep_nesting_is_refused_before_the_decoder_recurses(raw):
    with pytest.raises(LeaseError, match="nested deeper than"):
        LeaseAttrs.from_json(raw)


def test_flannel_depth_is_fine():
    assert LeaseAttrs.from_json(b'{"PublicIP":"10.0.0.1","BackendData":{"Overlaynet":{"GSO":1}}}').backend_data


@pytest.mark.parametrize("raw", [b"x" * (MAX_DOCUMENT_BYTES + 1),
                                 b'{"PublicIP":"10.0.0.1","Pad":"' + b"y" * MAX_DOCUMENT_BYTES + b'"}'])
def test_oversized_values_are_refused_unread_and_quoted_short(raw):
    with pytest.raises(LeaseError, match="more than the 65536") as info:
        LeaseAttrs.from_json(raw, where="lease 10.5.1.0-24")
    assert len(str(info.value)) < 500


@pytest.mark.parametrize("raw", [b'{"PublicIP": NaN}', b'{"PublicIP": Infinity}', b'{"VNI": -Infinity}',
                                 b'{"PublicIP":"10.0.0.1","BackendData":{"VNI":' + b"9" * 5000 + b"}}",
                                 b"\xff\xfe\x00{", b'{"PublicIP":"10.0.0.1\xc3"}'])
def test_not_json_constants_huge_numbers_and_bad_utf8_are_clean_errors(raw):
    with pytest.raises(LeaseError, match="not valid JSON"):
        LeaseAttrs.from_json(raw)


def test_a_long_value_is_quoted_at_most_quote_limit_characters():
    raw = b'{"PublicIP": "' + b"1" * 5000 + b'"}'
    with pytest.raises(LeaseError) as info:
        LeaseAttrs.from_json(raw)
    assert "..." in str(info.value) and len(str(info.value)) < QUOTE_LIMIT + 300


@dataclass
class PutEvent:  # the shape of etcd3.events.PutEvent (input data, not a stand-in for a fault)
    key: bytes
    value: bytes
    lease: int = 0
    mod_revision: int = 5
    create_revision: int = 5


@dataclass
class DeleteEvent:
    key: bytes
    value: bytes = b""
    lease: int = 0
    mod_revision: int = 6
    create_revision: int = 0


@pytest.fixture(scope="module")
def registry() -> LeaseRegistry:
    # No call is made: decode_event only reads the prefix.
    return LeaseRegistry(EtcdConnection(EtcdSettings()), "/coreos.com/network")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.one_of(st.binary(max_size=40), st.sampled_from(
    [b"10.5.1.0-24", b"10.5.2.0-24", b"0.0.0.0-0", b"10.5.1.0-24\xff"])), raw_values), max_size=20))
def test_the_agents_event_handling_never_raises(registry, events):
    cache = PeerCache(select_where(lambda lease: True))
    for is_put, key, raw in events:
        event = PutEvent(PREFIX.encode() + key, raw) if is_put else DeleteEvent(PREFIX.encode() + key)
        decoded = registry.decode_event(event, 7)
        cache.apply(decoded)
        assert decoded.lease is not None or decoded.kind == "delete" or decoded.error
    assert all(isinstance(lease, Lease) for lease in cache.peers.values())


def test_every_error_is_a_flannel_error():
    assert issubclass(LeaseError, FlannelError) and issubclass(ConfigError, FlannelError)
