"""The wireguard backend's facts: upstream's Backend fields with their defaults and checks,
the lease data peers are judged by, and the PSK never shown."""

from __future__ import annotations

import base64
import logging

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.agent.config_guard import differences
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.leftovers import _owner
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.wireguard import (
    SPEC,
    check_peer_data,
    peer_identities,
    peer_port,
)
from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import ConfigError
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.config import NetworkConfig

PSK = base64.b64encode(bytes(range(32))).decode()
KEY = base64.b64encode(bytes(range(1, 33))).decode()


def config(**backend) -> NetworkConfig:
    return NetworkConfig.from_dict({"Network": "10.5.0.0/16", "Backend": {"Type": "wireguard", **backend}})


def error(doc: dict) -> str:
    with pytest.raises(ConfigError) as info:
        NetworkConfig.from_dict(doc)
    return str(info.value)


def test_upstreams_defaults_apply():
    backend = config().backend
    assert backend.effective() == {"Type": "wireguard", "ListenPort": 51820, "ListenPortV6": 51821,
                                   "PersistentKeepaliveInterval": 0, "Mode": "separate"}
    assert SPEC.overlay_mtu(backend, 1500) == 1420
    assert SPEC.device is not None and SPEC.device.name(backend) == "flannel-wg"


@pytest.mark.parametrize(("backend", "needle"), [
    ({"ListenPort": 0}, "ListenPort 0 is out of range"),
    ({"ListenPort": 70000}, "ListenPort 70000 is out of range"),
    ({"ListenPort": "51820"}, "must be a int"),
    ({"PersistentKeepaliveInterval": -1}, "PersistentKeepaliveInterval -1 is out of range"),
    ({"Mode": "tunnel"}, "is not a wireguard Mode; use one of separate, auto, ipv4, ipv6"),
    ({"Mode": "ipv6"}, "Mode ipv6 (tunnels over the peers' PublicIPv6) is not supported yet"),
    ({"PSK": "c2hvcnQ="}, "is not a WireGuard key"),
])
def test_a_bad_field_is_a_clear_error(backend, needle):
    assert needle in error({"Network": "10.5.0.0/16", "Backend": {"Type": "wireguard", **backend}})


def test_ipv6_waits_for_dual_stack_with_a_clear_error():
    message = error({"Network": "10.5.0.0/16", "EnableIPv6": True, "IPv6Network": "fd00:5::/56",
                     "Backend": {"Type": "wireguard"}})
    assert "does not run IPv6 yet (flannel-wg-v6)" in message and "EnableIPv6 false" in message


def test_the_other_modes_run_on_ipv4():
    for mode in ("separate", "auto", "ipv4"):
        assert config(Mode=mode).backend.get("Mode") == mode


def test_a_bad_psk_is_not_shown_in_the_error():
    almost = PSK[:-4] + "!!!="
    message = error({"Network": "10.5.0.0/16", "Backend": {"Type": "wireguard", "PSK": almost}})
    assert almost not in message and "(secret)" in message
    assert PSK not in error({"Network": "10.5.0.0/16", "Backend": {"Type": "wireguard", "PSK": [PSK]}})


def test_the_psk_is_hidden_where_the_config_is_shown_and_its_change_still_seen(caplog):
    cfg = config(PSK=PSK)
    assert cfg.effective()["Backend"]["PSK"] == PSK  # what is compared and stored keeps it
    assert cfg.shown()["Backend"]["PSK"] == "(secret)"  # /stats
    other = base64.b64encode(bytes(32 * [7])).decode()
    changed = differences(cfg, config(PSK=other))
    assert changed == ["Backend.PSK (secret) -> (secret)"]
    assert differences(config(), cfg) == ["Backend.PSK unset -> (secret)"]
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("t").info("%s", cfg.shown())
    assert PSK not in caplog.text


def test_the_digest_tells_a_changed_psk_where_the_shown_config_cannot():
    cfg, other = config(PSK=PSK), config(PSK=base64.b64encode(bytes(32 * [7])).decode())
    assert cfg.shown() == other.shown() and cfg.digest() != other.digest()  # what the role compares
    assert cfg.digest() == config(PSK=PSK, ListenPort=51820).digest()  # defaults spelled out: the same
    assert PSK not in cfg.digest() and len(cfg.digest()) == 64


@pytest.mark.parametrize(("data", "reason"), [
    (None, "no WireGuard PublicKey"),
    ({"PublicKey": "abc"}, "no WireGuard PublicKey"),
    ({"PublicKey": KEY[:-2]}, "no WireGuard PublicKey"),
    ({"PublicKey": KEY, "Port": 0}, "Port 0 is not a UDP port"),
    ({"PublicKey": KEY, "Port": True}, "Port True is not a UDP port"),
    ({"PublicKey": KEY, "Port": "51820"}, "is not a UDP port"),
    ({"PublicKey": KEY}, None),  # upstream's leases: no Port
    ({"publickey": KEY, "Port": 51999}, None),  # keys case-insensitive, as Go's json
])
def test_peer_data_is_judged(data, reason):
    found = check_peer_data(data, config().backend)
    assert (found is None) if reason is None else (reason in str(found))


def test_a_peer_is_reached_on_its_port_or_else_ours():
    backend = config(ListenPort=51900).backend
    assert peer_port({"PublicKey": KEY, "Port": 51999}, backend) == 51999
    assert peer_port({"PublicKey": KEY}, backend) == 51900


def test_no_two_peers_may_share_a_public_key():
    assert peer_identities({"PublicKey": KEY}) == (f"PublicKey {KEY}",)
    assert peer_identities({"PublicKey": "nope"}) == ()


def test_both_device_kinds_are_found_as_wireguards_after_a_switch():
    assert _owner("wireguard", "flannel-wg").type == "wireguard"  # the kernel's
    assert _owner("tun", "flannel-wg").type == "wireguard"  # wireguard-go's
    assert _owner("tun", "flannel-wg-v6").type == "wireguard"
    assert _owner("tun", "flannel-wgx") is None and _owner("wireguard", "wg0") is None
    assert _owner("tun", "flannel0").type == "udp"
