"""Each backend names the device it creates, so another backend's agent can find it."""

from __future__ import annotations

import re

from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.leftovers import _owner
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.registry import SPECS
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.config import NetworkConfig


def backend(doc: str):
    return NetworkConfig.from_json(f'{{"Network": "10.5.0.0/16", "Backend": {doc}}}').backend


def test_the_devices_of_our_backends_and_only_those_are_ours():
    assert _owner("vxlan", "flannel.1").type == "vxlan"
    assert _owner("vxlan", "flannel.4096").type == "vxlan"
    assert _owner("tun", "flannel0").type == "udp"
    for kind, name in (("vxlan", "vxlan0"), ("vxlan", "flannel0"), ("tun", "flannel.1"), ("tun", "tun0"),
                       ("bridge", "docker0"), ("veth", "flannel.1x"), ("vxlan", "flannel.1x")):
        assert _owner(kind, name) is None, (kind, name)


def test_the_configured_name_matches_the_pattern_it_is_found_by():
    for doc in ('{"Type": "vxlan"}', '{"Type": "vxlan", "VNI": 77}', '{"Type": "udp"}'):
        config = backend(doc)
        device = SPECS[config.type].device
        assert device is not None and re.fullmatch(device.pattern, device.name(config))
    assert SPECS["host-gw"].device is None


def test_which_backends_route_over_the_underlay():
    assert SPECS["host-gw"].routes_via_underlay(backend('{"Type": "host-gw"}'))
    assert not SPECS["udp"].routes_via_underlay(backend('{"Type": "udp"}'))
    assert not SPECS["vxlan"].routes_via_underlay(backend('{"Type": "vxlan"}'))
    assert SPECS["vxlan"].routes_via_underlay(backend('{"Type": "vxlan", "DirectRouting": true}'))
