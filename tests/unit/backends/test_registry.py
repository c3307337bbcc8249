"""The backend registry: each backend's facts, found by Type, and what a new backend adds."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.backends import registry
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.registry import (
    BACKEND_TYPES,
    same_backend,
    spec_for,
    type_of_lease,
)
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.spec import BackendSpec, ConfigField
from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import ConfigError
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.config import NetworkConfig


def config(backend: dict) -> NetworkConfig:
    return NetworkConfig.from_dict({"Network": "10.5.0.0/16", "Backend": backend})


def test_the_four_backends_and_their_facts():
    assert BACKEND_TYPES == ("vxlan", "host-gw", "udp", "wireguard")
    facts = {t: (spec_for(t).overhead, spec_for(t).lease_type, spec_for(t).needs_l2_adjacency) for t in BACKEND_TYPES}
    assert facts == {"vxlan": (50, "vxlan", False), "host-gw": (0, "host-gw", True), "udp": (28, "", False),
                     "wireguard": (80, "wireguard", False)}


@pytest.mark.parametrize(("backend", "underlay", "mtu"), [
    ({"Type": "vxlan"}, 1500, 1450),
    ({"Type": "vxlan", "MTU": 9000}, 1500, 8950),  # upstream's meaning: the underlay MTU, device MTU - 50
    ({"Type": "vxlan", "MTU": 1400}, 9000, 1350),
    ({"Type": "host-gw"}, 9000, 9000),
    ({"Type": "udp"}, 1500, 1472),
    ({"Type": "wireguard"}, 1500, 1420),  # upstream's 80 bytes
])
def test_overlay_mtu(backend, underlay, mtu):
    cfg = config(backend)
    assert cfg.backend.spec.overlay_mtu(cfg.backend, underlay) == mtu


def test_what_the_module_writes_into_a_lease_before_the_agent_runs():
    vxlan = config({"Type": "vxlan", "VNI": 7})
    data = vxlan.backend.spec.module_lease_data(vxlan.backend, "192.168.81.11")
    assert data is not None and data["VNI"] == 7 and len(data["VtepMAC"]) == 17
    for other in ({"Type": "host-gw"}, {"Type": "udp"}):
        cfg = config(other)
        assert cfg.backend.spec.module_lease_data(cfg.backend, "192.168.81.11") is None


def test_lease_backend_types_name_backends():
    assert [type_of_lease(t) for t in ("", "udp", "vxlan", "host-gw", "wireguard")] == \
        ["udp", "udp", "vxlan", "host-gw", "wireguard"]
    assert same_backend("", "udp") and not same_backend("vxlan", "host-gw")


@pytest.mark.parametrize("bad", ["geneve", 5, None, ["vxlan"]])
def test_an_unknown_type_names_the_known_ones(bad):
    with pytest.raises(ConfigError, match="use one of vxlan, host-gw, udp"):
        spec_for(bad)


def test_a_new_backend_is_one_spec_away(monkeypatch):
    """What adding a backend takes: its SPEC in the registry; the config model, the MTU and the
    lease data follow from it (no other table to edit)."""
    spec = BackendSpec(type="tunnelx", implementation="backend:TunnelX",
                       fields={"Port": ConfigField(int, 4789, 0, 65535), "Key": ConfigField(str)},
                       overhead=60, lease_type="tunnelx",
                       module_lease_data=lambda backend, ip: {"Port": backend.port})
    monkeypatch.setitem(registry.SPECS, "tunnelx", spec)
    cfg = config({"Type": "tunnelx", "key": "k1"})
    assert cfg.backend.fields == {"Key": "k1"}  # canonical spelling, case-insensitive keys
    assert cfg.backend.effective() == {"Type": "tunnelx", "Port": 4789, "Key": "k1"}
    assert cfg.backend.spec.overlay_mtu(cfg.backend, 1500) == 1440
    assert cfg.backend.spec.module_lease_data(cfg.backend, "192.168.81.11") == {"Port": 4789}
    with pytest.raises(ConfigError, match="Backend Port 70000 is out of range"):
        config({"Type": "tunnelx", "Port": 70000})
    assert json.loads(cfg.to_json())["Backend"] == {"Type": "tunnelx", "Key": "k1"}
    monkeypatch.setitem(registry.SPECS, "tunnelx", replace(spec, fields={}))
    assert config({"Type": "tunnelx", "Key": "k1"}).backend.extra == {"Key": "k1"}  # unknown: kept as given
