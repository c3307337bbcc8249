"""netconfig.NetworkConfig and subnet_range against flannel's config rules (DESIGN §3).

Expected values are flannel's (pkg/subnet/config.go, config_test.go) worked out by hand:
SubnetLen 24 when the prefix is /22 or shorter, else prefix+2; SubnetMin = network + one
subnet; SubnetMax = the network's end + 1 - one subnet.
"""

from __future__ import annotations

import json

import netaddr
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.registry import BACKEND_TYPES
from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import ConfigError
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.config import NetworkConfig
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.range import subnet_range

NET = "10.3.0.0/16"

# --------------------------------------------------------------------------- defaults

# Network -> (SubnetLen, SubnetMin, SubnetMax, number of subnets between them)
IPV4_DEFAULTS = [
    ("10.3.0.0/16", 24, "10.3.1.0", "10.3.255.0", 255),  # flannel's TestConfigDefaults
    ("10.0.0.0/8", 24, "10.0.1.0", "10.255.255.0", 65535),
    ("10.4.0.0/22", 24, "10.4.1.0", "10.4.3.0", 3),
    ("10.4.0.0/23", 25, "10.4.0.128", "10.4.1.128", 3),
    ("192.168.0.0/24", 26, "192.168.0.64", "192.168.0.192", 3),
    ("10.4.0.0/28", 30, "10.4.0.4", "10.4.0.12", 3),
    ("0.0.0.0/0", 24, "0.0.1.0", "255.255.255.0", 16777215),
]


@pytest.mark.parametrize(("network", "length", "low", "high", "count"), IPV4_DEFAULTS)
def test_ipv4_defaults(network, length, low, high, count):
    cfg = NetworkConfig.from_dict({"Network": network})
    assert str(cfg.network) == network
    assert cfg.subnet_len == length
    assert str(cfg.subnet_min) == low
    assert str(cfg.subnet_max) == high
    assert cfg.network_range.count == count
    assert cfg.ipv6 is None


@pytest.mark.parametrize(("network", "length", "low", "high", "count"), IPV4_DEFAULTS)
def test_subnet_range_defaults_and_walk(network, length, low, high, count):
    rng = subnet_range(4, network, None, None, None, "")
    assert (rng.subnet_len, str(rng.subnet_min), str(rng.subnet_max), rng.count) == (length, low, high, count)
    assert rng.subnet_at(0) == netaddr.IPNetwork(f"{low}/{length}")
    assert rng.subnet_at(count - 1) == netaddr.IPNetwork(f"{high}/{length}")
    assert rng.step == 2 ** (32 - length)


def test_subnet_range_subnets_lists_every_subnet_in_order():
    rng = subnet_range(4, "10.4.0.0/24", 27, None, None, "")
    assert [str(s) for s in rng.subnets()] == [f"10.4.0.{i * 32}/27" for i in range(1, 8)]


def test_explicit_subnet_len_is_used_and_zero_means_default():
    assert NetworkConfig.from_dict({"Network": NET, "SubnetLen": 26}).subnet_len == 26
    assert NetworkConfig.from_dict({"Network": NET, "SubnetLen": 0}).subnet_len == 24
    # the extremes flannel allows: prefix+2 and /30
    assert NetworkConfig.from_dict({"Network": NET, "SubnetLen": 18}).subnet_len == 18
    assert NetworkConfig.from_dict({"Network": NET, "SubnetLen": 30}).subnet_len == 30


def test_flannel_config_overrides_vector():
    # flannel's TestConfigOverrides
    cfg = NetworkConfig.from_dict({"Network": NET, "SubnetMin": "10.3.5.0", "SubnetMax": "10.3.8.0", "SubnetLen": 28})
    assert (cfg.subnet_len, str(cfg.subnet_min), str(cfg.subnet_max)) == (28, "10.3.5.0", "10.3.8.0")
    assert cfg.network_range.count == (3 * 256) // 16 + 1


def test_min_equal_max_is_one_subnet():
    cfg = NetworkConfig.from_dict({"Network": NET, "SubnetMin": "10.3.7.0", "SubnetMax": "10.3.7.0"})
    assert cfg.network_range.count == 1
    assert [str(s) for s in cfg.network_range.subnets()] == ["10.3.7.0/24"]


@pytest.mark.parametrize(
    ("subnet", "fits"),
    [
        ("10.3.1.0/24", True),
        ("10.3.255.0/24", True),
        ("10.3.0.0/24", False),  # the skipped first subnet
        ("10.3.1.0/25", False),  # wrong length
        ("10.3.1.128/25", False),
        ("10.4.1.0/24", False),  # other network
        ("10.3.0.0/16", False),
    ],
)
def test_range_fits(subnet, fits):
    rng = NetworkConfig.from_dict({"Network": NET}).network_range
    assert rng.fits(netaddr.IPNetwork(subnet)) is fits


def test_fits_rejects_host_bits_and_other_family():
    rng = NetworkConfig.from_dict({"Network": NET}).network_range
    assert rng.fits(netaddr.IPNetwork("10.3.5.1/24")) is False
    assert rng.fits(netaddr.IPNetwork("fc00::/24")) is False


# --------------------------------------------------------------------------- errors


def _config_error(doc, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        NetworkConfig.from_dict(doc, **kwargs)
    return str(info.value)


# (document, strings the message must contain)
INVALID = [
    ({"Network": "10.3.0.0/29"}, ["10.3.0.0/29", "too small", "/28"]),
    ({"Network": "10.3.0.0/30"}, ["10.3.0.0/30", "too small"]),
    ({"Network": "10.3.0.4/32"}, ["10.3.0.4/32", "too small"]),
    ({"Network": NET, "SubnetLen": 31}, ["SubnetLen", "31"]),
    ({"Network": NET, "SubnetLen": 32}, ["SubnetLen", "32"]),
    ({"Network": NET, "SubnetLen": 17}, ["SubnetLen", "17", NET]),
    ({"Network": NET, "SubnetLen": 8}, ["SubnetLen", "8", NET]),
    ({"Network": "10.4.0.0/28", "SubnetLen": 29}, ["SubnetLen", "29"]),
    ({"Network": NET, "SubnetLen": -1}, ["SubnetLen", "-1"]),
    ({"Network": NET, "SubnetLen": "24"}, ["SubnetLen", "'24'"]),
    ({"Network": NET, "SubnetLen": 24.5}, ["SubnetLen", "24.5"]),
    ({"Network": NET, "SubnetLen": True}, ["SubnetLen", "True"]),
    ({"Network": NET, "SubnetMin": "10.4.0.0"}, ["SubnetMin", "10.4.0.0", NET]),
    ({"Network": NET, "SubnetMin": "10.2.255.0"}, ["SubnetMin", "10.2.255.0"]),
    ({"Network": NET, "SubnetMax": "10.4.0.0"}, ["SubnetMax", "10.4.0.0", NET]),
    ({"Network": NET, "SubnetMin": "10.3.1.1"}, ["SubnetMin", "10.3.1.1", "/24"]),
    ({"Network": NET, "SubnetMax": "10.3.9.128"}, ["SubnetMax", "10.3.9.128", "/24"]),
    ({"Network": NET, "SubnetLen": 26, "SubnetMin": "10.3.1.32"}, ["SubnetMin", "10.3.1.32", "/26"]),
    ({"Network": NET, "SubnetMin": "10.3.9.0", "SubnetMax": "10.3.5.0"}, ["10.3.9.0", "10.3.5.0"]),
    ({"Network": NET, "SubnetMin": "banana"}, ["SubnetMin", "banana"]),
    ({"Network": NET, "SubnetMin": "10.3.1"}, ["SubnetMin", "10.3.1"]),
    ({"Network": NET, "SubnetMin": "fc00::"}, ["SubnetMin", "fc00::"]),
    ({"Network": NET, "SubnetMax": 167968512}, ["SubnetMax", "167968512"]),
    ({}, ["Network"]),
    ({"Network": ""}, ["Network"]),
    ({"Network": None}, ["Network"]),
    ({"Network": "10.3.0.0"}, ["Network", "10.3.0.0"]),
    ({"Network": "10.3.0.0/33"}, ["Network", "10.3.0.0/33"]),
    ({"Network": "10.3.1.0/16"}, ["Network", "10.3.1.0/16", "10.3.0.0/16"]),
    ({"Network": "garbage"}, ["Network", "garbage"]),
    ({"Network": "010.3.0.0/16"}, ["Network", "010.3.0.0/16"]),
    ({"Network": "fc00::/48"}, ["Network", "fc00::/48"]),
    ({"Network": 167968768}, ["Network", "167968768"]),
    ({"Network": ["10.3.0.0/16"]}, ["Network", "['10.3.0.0/16']"]),
    ({"Network": NET, "EnableIPv4": "yes"}, ["EnableIPv4", "'yes'"]),
    ({"Network": NET, "EnableIPv6": 1}, ["EnableIPv6", "1"]),
    ({"Network": NET, "EnableIPv4": False, "EnableIPv6": False}, ["EnableIPv4", "EnableIPv6"]),
    ({"Network": NET, "EnableIPv6": True}, ["IPv6Network"]),
    ({"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": "fc00::/125"}, ["fc00::/125", "too small", "/124"]),
    ({"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": "fc00::/48", "IPv6SubnetLen": 127},
     ["IPv6SubnetLen", "127"]),
    ({"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": "fc00::/48", "IPv6SubnetLen": 49},
     ["IPv6SubnetLen", "49"]),
    ({"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": "10.0.0.0/8"}, ["IPv6Network", "10.0.0.0/8"]),
    ({"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": "fc00::/48", "IPv6SubnetMin": "fc00:0:0:1::1"},
     ["IPv6SubnetMin", "fc00:0:0:1::1"]),
    ({"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": "fc00::/48", "IPv6SubnetMax": "fc01::"},
     ["IPv6SubnetMax", "fc01::"]),
    ({"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": "fc00::/48",
      "IPv6SubnetMin": "fc00:0:0:9::", "IPv6SubnetMax": "fc00:0:0:2::"}, ["fc00:0:0:9::", "fc00:0:0:2::"]),
]


@pytest.mark.parametrize(("doc", "needles"), INVALID, ids=[json.dumps(d)[:70] for d, _unused in INVALID])
def test_invalid_config_names_the_value(doc, needles):
    message = _config_error(doc)
    for needle in needles:
        assert needle in message, f"{needle!r} missing from {message!r}"


@pytest.mark.parametrize("doc", [None, [], "10.3.0.0/16", 42])
def test_non_object_document(doc):
    assert repr(doc) in _config_error(doc)


@pytest.mark.parametrize("doc", [[], {}, {"Network": NET, "EnableIPv4": False}, {"Network": NET, "network": NET}])
def test_where_is_in_the_message(doc):
    assert "stored config at /x/config" in _config_error(doc, where="stored config at /x/config")


@pytest.mark.parametrize(
    "network",
    ["10.3.0.0/+16", "10.3.0.0/16 ", "10.3.0.0/16\n", "10.3.0.0/1_6", "10.3.0.0/\u0661\u0666"],
)
def test_network_prefix_must_be_plain_ascii_digits(network):
    assert repr(network) in _config_error({"Network": network})


@pytest.mark.parametrize("value", [False, 0.0])
def test_subnet_len_false_or_float_zero_is_a_type_error(value):
    assert "SubnetLen" in _config_error({"Network": NET, "SubnetLen": value})


# --------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    "doc",
    [
        {"network": NET},
        {"NETWORK": NET},
        {"nEtWoRk": NET},
        {"Network": NET, "subnetlen": 24, "SUBNETMIN": "10.3.1.0", "subnetMax": "10.3.255.0"},
        {"network": NET, "enableipv4": True},
    ],
)
def test_keys_are_case_insensitive(doc):
    cfg = NetworkConfig.from_dict(doc)
    assert (str(cfg.network), cfg.subnet_len, str(cfg.subnet_min), str(cfg.subnet_max)) == (
        NET, 24, "10.3.1.0", "10.3.255.0")
    # given keys are stored under their canonical names
    assert "Network" in cfg.to_dict()
    assert all(k in ("Network", "SubnetLen", "SubnetMin", "SubnetMax", "EnableIPv4") for k in cfg.to_dict())


def test_case_insensitive_subnet_keys_take_effect():
    cfg = NetworkConfig.from_dict({"NETWORK": NET, "subnetlen": 26, "subnetmin": "10.3.4.0", "SUBNETMAX": "10.3.5.192"})
    assert (cfg.subnet_len, str(cfg.subnet_min), str(cfg.subnet_max)) == (26, "10.3.4.0", "10.3.5.192")


@pytest.mark.parametrize(
    ("backend", "btype", "vni"),
    [
        ({"type": "host-gw"}, "host-gw", None),
        ({"TYPE": "vxlan", "vni": 7}, "vxlan", 7),
        ({"Type": "vxlan", "Vni": 4096}, "vxlan", 4096),
        ({"tYpE": "udp"}, "udp", None),
    ],
)
@pytest.mark.parametrize("backend_key", ["Backend", "backend", "BACKEND"])
def test_backend_keys_are_case_insensitive(backend_key, backend, btype, vni):
    cfg = NetworkConfig.from_dict({"Network": NET, backend_key: backend})
    assert cfg.backend.type == btype
    if vni is not None:
        assert cfg.backend.vni == vni
        assert cfg.to_dict()["Backend"] == {"Type": btype, "VNI": vni}


def test_flannel_ipv6_lowercase_keys():
    # flannel's TestIPv6ConfigDefaults document, keys exactly as in flannel's test
    cfg = NetworkConfig.from_dict({"enableIPv6": True, "ipv6Network": "fc00::/48", "enableIPv4": False})
    assert cfg.ipv4 is None
    assert str(cfg.ipv6.network) == "fc00::/48"


@pytest.mark.parametrize(
    ("doc", "name"),
    [
        ({"Network": NET, "network": "10.4.0.0/16"}, "Network"),
        ({"Network": NET, "SubnetLen": 24, "SUBNETLEN": 25}, "SubnetLen"),
        ({"Network": NET, "Backend": {"Type": "udp"}, "backend": {"Type": "vxlan"}}, "Backend"),
        ({"Network": NET, "EnableIPv6": False, "enableipv6": True}, "EnableIPv6"),
        ({"Network": NET, "Backend": {"Type": "vxlan", "VNI": 1, "vni": 2}}, "VNI"),
        ({"Network": NET, "Backend": {"Type": "vxlan", "Port": 1, "PORT": 2}}, "Port"),
    ],
)
def test_duplicate_keys_differing_by_case_are_an_error(doc, name):
    message = _config_error(doc)
    assert name in message
    assert "twice" in message or "duplicate" in message.lower()


@pytest.mark.parametrize(
    "backend",
    [{"Type": "vxlan", "type": "udp"}, {"type": "udp", "TYPE": "vxlan"}, {"Type": "host-gw", "type": "host-gw"}],
)
def test_duplicate_backend_type_differing_by_case_is_an_error(backend):
    assert "Type" in _config_error({"Network": NET, "Backend": backend})


# --------------------------------------------------------------------------- backend


def test_missing_backend_is_udp_like_flannel():
    cfg = NetworkConfig.from_dict({"Network": NET})
    assert cfg.backend.type == "udp"
    assert cfg.backend.port == 8285
    assert NetworkConfig.from_json('{"Network":"172.17.0.0/16"}').backend.type == "udp"


@pytest.mark.parametrize("default", ["vxlan", "host-gw", "udp"])
def test_default_backend_applies_only_without_type(default):
    assert NetworkConfig.from_dict({"Network": NET}, default_backend=default).backend.type == default
    assert NetworkConfig.from_dict({"Network": NET, "Backend": {}}, default_backend=default).backend.type == default
    explicit = "host-gw" if default != "host-gw" else "vxlan"
    cfg = NetworkConfig.from_dict({"Network": NET, "Backend": {"Type": explicit}}, default_backend=default)
    assert cfg.backend.type == explicit


def test_vxlan_defaults_and_given_values():
    cfg = NetworkConfig.from_dict({"Network": NET, "Backend": {"Type": "vxlan"}})
    assert (cfg.backend.vni, cfg.backend.port, cfg.backend.direct_routing) == (1, 8472, False)
    cfg = NetworkConfig.from_dict(
        {"Network": NET, "Backend": {"Type": "vxlan", "VNI": 42, "Port": 4789, "DirectRouting": True}})
    assert (cfg.backend.vni, cfg.backend.port, cfg.backend.direct_routing) == (42, 4789, True)


def test_port_zero_means_the_backend_default():
    assert NetworkConfig.from_dict({"Network": NET, "Backend": {"Type": "vxlan", "Port": 0}}).backend.port == 8472
    assert NetworkConfig.from_dict({"Network": NET, "Backend": {"Type": "udp", "Port": 0}}).backend.port == 8285


def test_explicit_vni_zero_is_kept_like_flannel():
    assert NetworkConfig.from_dict({"Network": NET, "Backend": {"Type": "vxlan", "VNI": 0}}).backend.vni == 0


@pytest.mark.parametrize("btype", ["ipsec", "ipip", "VXLAN", "Host-GW", "", "alloc"])
def test_unknown_backend_type_lists_the_allowed_types(btype):
    message = _config_error({"Network": NET, "Backend": {"Type": btype}})
    assert repr(btype) in message
    for allowed in ("vxlan", "host-gw", "udp", "wireguard"):
        assert allowed in message


def test_backend_types_are_flannels():
    assert set(BACKEND_TYPES) == {"vxlan", "host-gw", "udp", "wireguard"}


@pytest.mark.parametrize("btype", [None, 1, True, ["vxlan"]])
def test_non_string_backend_type_is_an_error(btype):
    assert repr(btype) in _config_error({"Network": NET, "Backend": {"Type": btype}})


@pytest.mark.parametrize("backend", ["vxlan", ["vxlan"], 1, True])
def test_backend_must_be_an_object(backend):
    message = _config_error({"Network": NET, "Backend": backend})
    assert "Backend" in message and repr(backend) in message


@pytest.mark.parametrize(
    ("btype", "fields", "needles"),
    [
        ("vxlan", {"VNI": True}, ["VNI", "True"]),
        ("vxlan", {"VNI": False}, ["VNI", "False"]),
        ("vxlan", {"VNI": "1"}, ["VNI", "'1'"]),
        ("vxlan", {"VNI": 1.0}, ["VNI", "1.0"]),
        ("vxlan", {"VNI": None}, ["VNI", "None"]),
        ("vxlan", {"VNI": -1}, ["VNI", "-1"]),
        ("vxlan", {"VNI": 16777216}, ["VNI", "16777216"]),
        ("vxlan", {"Port": 65536}, ["Port", "65536"]),
        ("vxlan", {"Port": -1}, ["Port", "-1"]),
        ("vxlan", {"Port": "8472"}, ["Port", "'8472'"]),
        ("vxlan", {"Port": True}, ["Port", "True"]),
        ("udp", {"Port": 70000}, ["Port", "70000"]),
        ("udp", {"port": "8285"}, ["Port", "'8285'"]),
        ("vxlan", {"DirectRouting": "yes"}, ["DirectRouting", "'yes'"]),
        ("vxlan", {"DirectRouting": 1}, ["DirectRouting", "1"]),
        ("vxlan", {"GBP": 0}, ["GBP", "0"]),
        ("vxlan", {"MTU": 70000}, ["MTU", "70000"]),
        ("vxlan", {"MacPrefix": 12}, ["MacPrefix", "12"]),
    ],
)
def test_backend_field_type_and_range(btype, fields, needles):
    message = _config_error({"Network": NET, "Backend": {"Type": btype, **fields}})
    for needle in needles:
        assert needle in message, f"{needle!r} missing from {message!r}"


@pytest.mark.parametrize(
    ("btype", "fields"),
    [
        ("vxlan", {"VNI": 0}),
        ("vxlan", {"VNI": 16777215}),
        ("vxlan", {"Port": 0}),
        ("vxlan", {"Port": 65535}),
        ("vxlan", {"DirectRouting": True, "GBP": False, "Learning": False, "MTU": 1400, "MacPrefix": "0e:6a"}),
        ("udp", {"Port": 1}),
    ],
)
def test_backend_field_bounds_accepted(btype, fields):
    cfg = NetworkConfig.from_dict({"Network": NET, "Backend": {"Type": btype, **fields}})
    assert cfg.to_dict()["Backend"] == {"Type": btype, **fields}
    for name, value in fields.items():
        assert cfg.backend.get(name) == value


# --------------------------------------------------------------------------- JSON


@pytest.mark.parametrize(
    "raw",
    ["", "{", '{"Network": "10.3.0.0/16",}', "{'Network': '10.3.0.0/16'}", '{"Network":"10.3.0.0/16"} x', b"\xff\xfe{"],
)
def test_bad_json_is_a_config_error(raw):
    with pytest.raises(ConfigError) as info:
        NetworkConfig.from_json(raw, where="stored config at /coreos.com/network/config")
    message = str(info.value)
    assert "not valid JSON" in message
    assert "stored config at /coreos.com/network/config" in message
    assert repr(raw) in message


@pytest.mark.parametrize("raw", ["[]", '"10.3.0.0/16"', "null", "16"])
def test_json_that_is_not_an_object(raw):
    with pytest.raises(ConfigError) as info:
        NetworkConfig.from_json(raw)
    assert repr(json.loads(raw)) in str(info.value)


def test_from_json_accepts_bytes_and_str():
    assert NetworkConfig.from_json(b'{"Network":"10.3.0.0/16"}').effective() == (
        NetworkConfig.from_json('{"Network":"10.3.0.0/16"}').effective())


def test_effective_lists_every_default():
    cfg = NetworkConfig.from_dict({"Network": NET, "Backend": {"Type": "vxlan"}})
    assert cfg.effective() == {
        "EnableIPv4": True,
        "EnableIPv6": False,
        "Network": NET,
        "SubnetLen": 24,
        "SubnetMin": "10.3.1.0",
        "SubnetMax": "10.3.255.0",
        "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472, "GBP": False, "DirectRouting": False, "Learning": False},
    }


@pytest.mark.parametrize(
    ("omitted", "explicit"),
    [
        ({"Network": NET, "Backend": {"Type": "vxlan"}},
         {"Network": NET, "SubnetLen": 24, "SubnetMin": "10.3.1.0", "SubnetMax": "10.3.255.0", "EnableIPv4": True,
          "EnableIPv6": False,
          "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472, "GBP": False, "DirectRouting": False,
                      "Learning": False}}),
        ({"Network": NET}, {"network": NET, "backend": {"type": "udp", "port": 8285}}),
        ({"Network": NET, "Backend": {"Type": "host-gw"}},
         {"Network": NET, "SubnetLen": 0, "Backend": {"Type": "host-gw"}}),
        ({"Network": "10.4.0.0/23"}, {"Network": "10.4.0.0/23", "SubnetLen": 25, "SubnetMin": "10.4.0.128"}),
        ({"EnableIPv6": True, "IPv6Network": "fc00::/48", "EnableIPv4": False},
         {"EnableIPv6": True, "IPv6Network": "fc00::/48", "EnableIPv4": False, "IPv6SubnetLen": 64,
          "IPv6SubnetMin": "fc00:0:0:1::", "IPv6SubnetMax": "fc00:0:0:ffff::"}),
    ],
)
def test_effective_equal_for_explicit_defaults_and_omitted(omitted, explicit):
    assert NetworkConfig.from_dict(omitted).effective() == NetworkConfig.from_dict(explicit).effective()


@pytest.mark.parametrize(
    "other",
    [
        {"Network": NET, "Backend": {"Type": "vxlan", "VNI": 2}},
        {"Network": NET, "Backend": {"Type": "vxlan", "Port": 4789}},
        {"Network": NET, "Backend": {"Type": "udp"}},
        {"Network": NET, "Backend": {"Type": "host-gw"}},
        {"Network": NET, "SubnetLen": 25, "Backend": {"Type": "vxlan"}},
        {"Network": NET, "SubnetMin": "10.3.2.0", "Backend": {"Type": "vxlan"}},
        {"Network": NET, "SubnetMax": "10.3.254.0", "Backend": {"Type": "vxlan"}},
        {"Network": "10.4.0.0/16", "Backend": {"Type": "vxlan"}},
        {"Network": NET, "EnableIPv6": True, "IPv6Network": "fc00::/48", "Backend": {"Type": "vxlan"}},
    ],
)
def test_effective_differs_when_the_network_differs(other):
    base = NetworkConfig.from_dict({"Network": NET, "Backend": {"Type": "vxlan"}})
    assert base.effective() != NetworkConfig.from_dict(other).effective()


def test_effective_port_zero_equals_omitted_port():
    zero = NetworkConfig.from_dict({"Network": NET, "Backend": {"Type": "vxlan", "Port": 0}})
    omitted = NetworkConfig.from_dict({"Network": NET, "Backend": {"Type": "vxlan"}})
    assert zero.effective() == omitted.effective()


def test_to_json_round_trip_keeps_unknown_keys():
    doc = {
        "Network": NET,
        "SubnetLen": 26,
        "Backend": {"Type": "vxlan", "VNI": 4, "SomeFutureField": [1, 2]},
        "Comment": "managed by ansible",
        "nested": {"a": {"b": None}},
    }
    cfg = NetworkConfig.from_dict(doc)
    assert cfg.extra == {"Comment": "managed by ansible", "nested": {"a": {"b": None}}}
    assert json.loads(cfg.to_json()) == doc
    again = NetworkConfig.from_json(cfg.to_json())
    assert again.effective() == cfg.effective()
    assert again.to_dict() == doc


def test_to_json_canonicalises_key_names_only():
    cfg = NetworkConfig.from_dict({"network": NET, "backend": {"type": "vxlan", "vni": 9}, "x-note": "kept"})
    assert json.loads(cfg.to_json()) == {"Network": NET, "Backend": {"Type": "vxlan", "VNI": 9}, "x-note": "kept"}


def test_to_json_does_not_add_defaults():
    assert json.loads(NetworkConfig.from_dict({"Network": NET}).to_json()) == {"Network": NET}


def test_to_json_keeps_a_defaulted_backend_type():
    cfg = NetworkConfig.from_dict({"Network": NET}, default_backend="vxlan")
    assert NetworkConfig.from_json(cfg.to_json()).backend.type == "vxlan"


# --------------------------------------------------------------------------- IPv6


def test_ipv6_only_defaults():
    cfg = NetworkConfig.from_dict({"EnableIPv6": True, "IPv6Network": "fc00::/48", "EnableIPv4": False})
    assert cfg.ipv4 is None
    assert (cfg.ipv6.subnet_len, str(cfg.ipv6.subnet_min), str(cfg.ipv6.subnet_max)) == (
        64, "fc00:0:0:1::", "fc00:0:0:ffff::")
    assert cfg.ipv6.count == 0xFFFF
    effective = cfg.effective()
    assert effective["EnableIPv4"] is False and effective["EnableIPv6"] is True
    assert "Network" not in effective and "SubnetLen" not in effective
    with pytest.raises(ConfigError, match="EnableIPv4"):
        _unused = cfg.network
    with pytest.raises(ConfigError, match="EnableIPv4"):
        _unused = cfg.network_range


def test_dual_stack():
    cfg = NetworkConfig.from_dict({"Network": NET, "EnableIPv6": True, "IPv6Network": "fd00:5::/56"})
    assert str(cfg.network) == NET and cfg.subnet_len == 24
    assert (cfg.ipv6.subnet_len, str(cfg.ipv6.subnet_min), str(cfg.ipv6.subnet_max)) == (
        64, "fd00:5:0:1::", "fd00:5:0:ff::")
    assert cfg.effective()["IPv6SubnetLen"] == 64


@pytest.mark.parametrize(
    ("network", "length", "low", "high"),
    [
        ("fc00::/62", 64, "fc00:0:0:1::", "fc00:0:0:3::"),
        ("fc00::/63", 65, "fc00::8000:0:0:0", "fc00:0:0:1:8000::"),
        ("fc00::/124", 126, "fc00::4", "fc00::c"),
    ],
)
def test_ipv6_default_lengths(network, length, low, high):
    rng = subnet_range(6, network, None, None, None, "IPv6")
    assert (rng.subnet_len, str(rng.subnet_min), str(rng.subnet_max), rng.count) == (length, low, high, 3)


def test_ipv6_overrides_flannel_vector():
    # flannel's TestIPv6ConfigOverrides
    cfg = NetworkConfig.from_dict({"EnableIPv6": True, "IPv6Network": "fc00::/48", "IPv6SubnetMin": "fc00:0:0:1::",
                                   "IPv6SubnetMax": "fc00:0:0:f::", "IPv6SubnetLen": 124, "enableIPv4": False})
    assert (cfg.ipv6.subnet_len, str(cfg.ipv6.subnet_min), str(cfg.ipv6.subnet_max)) == (
        124, "fc00:0:0:1::", "fc00:0:0:f::")


# --------------------------------------------------------------------------- property


def _recase(draw, key: str) -> str:
    return "".join(c.upper() if draw(st.booleans()) else c.lower() for c in key)


@st.composite
def valid_documents(draw):
    """A valid IPv4 config with random optional keys in random letter case, and the values
    flannel's rules give for it."""
    prefix = draw(st.integers(0, 28))
    base = draw(st.integers(0, 2**32 - 1)) & ((2**32 - 1) ^ (2 ** (32 - prefix) - 1))
    network = f"{netaddr.IPAddress(base)}/{prefix}"
    length = draw(st.integers(prefix + 2, 30))
    explicit_len = draw(st.booleans()) or length != (24 if prefix <= 22 else prefix + 2)
    step = 1 << (32 - length)
    total = 1 << (length - prefix)
    lo = draw(st.integers(0, total - 1)) if draw(st.booleans()) else 1
    hi = draw(st.integers(max(lo, 1), total - 1)) if draw(st.booleans()) else total - 1
    hi = max(hi, lo)
    doc = {_recase(draw, "Network"): network}
    if explicit_len:
        doc[_recase(draw, "SubnetLen")] = length
    if lo != 1 or draw(st.booleans()):
        doc[_recase(draw, "SubnetMin")] = str(netaddr.IPAddress(base + lo * step))
    if hi != total - 1 or draw(st.booleans()):
        doc[_recase(draw, "SubnetMax")] = str(netaddr.IPAddress(base + hi * step))
    btype = draw(st.sampled_from([None, "vxlan", "host-gw", "udp"]))
    if btype is not None:
        backend = {_recase(draw, "Type"): btype}
        if btype == "vxlan" and draw(st.booleans()):
            backend[_recase(draw, "VNI")] = draw(st.integers(1, 2**24 - 1))
        doc[_recase(draw, "Backend")] = backend
    if draw(st.booleans()):
        doc["x-extra"] = draw(st.integers())
    expected = (network, length, str(netaddr.IPAddress(base + lo * step)), str(netaddr.IPAddress(base + hi * step)),
                hi - lo + 1, btype or "udp")
    return doc, expected


@settings(max_examples=300, deadline=None)
@given(valid_documents())
def test_valid_configs_and_their_round_trip(case):
    doc, (network, length, low, high, count, btype) = case
    cfg = NetworkConfig.from_dict(doc)
    assert (str(cfg.network), cfg.subnet_len, str(cfg.subnet_min), str(cfg.subnet_max)) == (network, length, low, high)
    assert cfg.network_range.count == count
    assert cfg.backend.type == btype
    stored = cfg.to_json()
    again = NetworkConfig.from_json(stored)
    assert again.effective() == cfg.effective()
    assert json.loads(stored) == json.loads(again.to_json())
    canonical = {"Network", "SubnetLen", "SubnetMin", "SubnetMax", "Backend", "x-extra"}
    assert set(json.loads(stored)) <= canonical
