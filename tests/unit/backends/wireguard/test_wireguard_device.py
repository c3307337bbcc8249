"""The least set of changes that brings a WireGuard device to what it should be."""

from __future__ import annotations

import base64

from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.wireguard.device import (
    Changes,
    DeviceState,
    PeerConfig,
    changes,
)


def key(n: int) -> str:
    return base64.b64encode(bytes([n]) * 32).decode()


def peer(n: int, **kw) -> PeerConfig:
    return PeerConfig(key(n), f"192.168.81.1{n}:51820", (f"10.5.{n}.0/24",), **kw)


def test_a_device_already_as_wanted_gets_nothing():
    state = DeviceState(key(9), 51820, {key(1): peer(1), key(2): peer(2)})
    assert not changes(state, state)


def test_only_the_differences_are_sent():
    have = DeviceState(key(9), 51820, {key(1): peer(1), key(2): peer(2), key(3): peer(3)})
    want = DeviceState(None, 0, {key(1): peer(1), key(2): peer(2, keepalive=25), key(4): peer(4)})
    found = changes(want, have)
    assert found.device is None  # no key wanted: the device part is left alone
    assert [p.public_key for p in found.upserts] == [key(2), key(4)]
    assert found.removals == (key(3),)
    assert changes(want, have, stale=False).removals == ()


def test_a_new_key_or_port_is_sent_and_the_psk_counts():
    have = DeviceState(key(9), 51820, {key(1): peer(1)})
    assert changes(DeviceState(key(8), 51820, have.peers), have).device == (key(8), 51820)
    assert changes(DeviceState(key(9), 51821, have.peers), have).device == (key(9), 51821)
    with_psk = DeviceState(None, 0, {key(1): peer(1, psk=key(7))})
    assert [p.public_key for p in changes(with_psk, have).upserts] == [key(1)]


def test_secrets_stay_out_of_repr():
    found = changes(DeviceState(key(8), 51820, {key(1): peer(1, psk=key(7))}), DeviceState(None, 0))
    assert key(8) not in repr(found) and key(7) not in repr(found)
    assert isinstance(found, Changes) and found
