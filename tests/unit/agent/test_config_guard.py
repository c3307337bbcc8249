"""The agent follows the network config in etcd: what counts as a change, what is ignored."""

from __future__ import annotations

import json
import logging

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.agent.config_guard import (
    ConfigChanged,
    ConfigGuard,
    differences,
)
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.config import NetworkConfig

KEY = "/coreos.com/network/config"
RUNNING = NetworkConfig.from_json('{"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}')


def raw(doc: dict) -> bytes:
    return json.dumps(doc).encode()


@pytest.mark.parametrize("doc", [
    {"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}},
    {"Backend": {"Type": "vxlan", "VNI": 1, "Port": 0}, "Network": "10.5.0.0/16", "SubnetLen": 24},
    {"Network": "10.5.0.0/16", "backend": {"type": "vxlan", "port": 8472}},
], ids=["same", "defaults-spelled-out", "other-case"])
def test_the_same_network_written_differently_is_no_change(doc):
    ConfigGuard(RUNNING, KEY).check(raw(doc))


@pytest.mark.parametrize(("doc", "named"), [
    ({"Network": "10.5.0.0/16", "Backend": {"Type": "udp"}}, "Backend.Type 'vxlan' -> 'udp'"),
    ({"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan", "VNI": 4}}, "Backend.VNI 1 -> 4"),
    ({"Network": "10.6.0.0/16", "Backend": {"Type": "vxlan"}}, "Network '10.5.0.0/16' -> '10.6.0.0/16'"),
    ({"Network": "10.5.0.0/16", "SubnetLen": 25, "Backend": {"Type": "vxlan"}}, "SubnetLen 24 -> 25"),
    ({"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": True, "VNI": 2}},
     "Backend.DirectRouting False -> True; Backend.VNI 1 -> 2"),
    ({"Network": "10.5.0.0/16", "Backend": {"Type": "host-gw", "DirectRouting": True}},
     "Backend.Type 'vxlan' -> 'host-gw'"),
])
def test_a_change_of_meaning_ends_the_agent_naming_what_changed(doc, named):
    with pytest.raises(ConfigChanged, match="exiting with code 4") as caught:
        ConfigGuard(RUNNING, KEY).check(raw(doc))
    assert named in str(caught.value)


def test_a_change_of_live_fields_only_is_handed_back_to_apply_in_place(caplog):
    guard = ConfigGuard(RUNNING, KEY)
    direct = raw({"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": True}})
    with caplog.at_level(logging.INFO):
        new = guard.check(direct)
    assert new is not None and new.backend.direct_routing
    assert "Backend.DirectRouting False -> True); applying it in place" in caplog.text
    assert guard.running is RUNNING  # until the agent says it applied it
    guard.accept(new)
    assert guard.check(direct) is None
    assert guard.check(raw({"Backend": {"directrouting": True, "Type": "vxlan"}, "Network": "10.5.0.0/16"})) is None
    back = guard.check(raw({"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}))
    assert back is not None and not back.backend.direct_routing


@pytest.mark.parametrize("backend", ["host-gw", "udp"])
def test_backends_without_live_fields_restart_on_any_change(backend):
    running = NetworkConfig.from_json(raw({"Network": "10.5.0.0/16", "Backend": {"Type": backend}}))
    with pytest.raises(ConfigChanged):
        ConfigGuard(running, KEY).check(raw({"Network": "10.5.0.0/16", "SubnetLen": 26, "Backend": {"Type": backend}}))


def test_a_deleted_or_broken_config_is_not_followed_and_said_once_per_value(caplog):
    guard = ConfigGuard(RUNNING, KEY)
    with caplog.at_level(logging.WARNING):
        for value in (None, None, b"{not json", b"{not json", raw({"Network": "10.5.0.0/16", "Backend": {"Type": "x"}}),
                      b"\xff" * 10, None):
            guard.check(value)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 5, messages
    assert sum("was deleted" in m for m in messages) == 2
    assert all(KEY in m for m in messages)


def test_differences_name_settings_that_appear_or_vanish():
    hostgw = NetworkConfig.from_json('{"Network": "10.5.0.0/16", "Backend": {"Type": "host-gw"}}')
    changed = differences(hostgw, RUNNING)
    assert "Backend.Type 'host-gw' -> 'vxlan'" in changed
    assert "Backend.VNI unset -> 1" in changed
