"""The UAPI client against a real wireguard-go, in a network namespace of the test's own
(prefix oflw-): what set=1 writes, get=1 reads back, and the errors it names."""

from __future__ import annotations

import base64
import os
import shutil
import uuid

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.wireguard.device import (
    Changes,
    DeviceState,
    PeerConfig,
    changes,
)
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.wireguard.key_text import clamped
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.wireguard.uapi import Uapi, set_request
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.wireguard.userspace import WireguardGo
from ansible_collections.overlaynet.flannel.plugins.module_utils.errors import HostNetworkError
from lab.netns import Namespaces

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace and a TUN device")


def key(n: int) -> str:
    return base64.b64encode(bytes([n]) * 32).decode()


@pytest.fixture
def wggo():
    assert shutil.which("wireguard-go"), "wireguard-go is missing: make deps installs it (APT_PACKAGES)"
    namespaces = Namespaces()
    tag = uuid.uuid4().hex[:6]
    ns = namespaces.add(f"oflw-u{os.getpid()}-{tag}")
    process = WireguardGo(f"oflwu{tag}", ns)
    try:
        process.start()
        yield process
    finally:
        process.stop()
        namespaces.delete_all()


def test_set_and_get_round_trip_through_wireguard_go(wggo):
    uapi = wggo.uapi
    peer = PeerConfig(key(1), "192.168.81.12:51820", ("10.5.2.0/24", "10.5.3.0/24"), 25, key(5))
    private = clamped(key(9))  # as the device reports it back
    uapi.set(Changes((private, 51999), (peer, PeerConfig(key(2), "192.168.81.13:51821", ("10.5.4.0/24",)))))
    state = uapi.get()
    assert state.private_key == private and state.listen_port == 51999
    assert state.peers == {key(1): peer, key(2): PeerConfig(key(2), "192.168.81.13:51821", ("10.5.4.0/24",))}
    # What a reconcile round finds: nothing to send when the device is as wanted.
    assert not changes(DeviceState(private, 51999, dict(state.peers)), state)
    # One peer's AllowedIPs replaced, another removed, in one request.
    moved = PeerConfig(key(1), "192.168.81.12:51820", ("10.5.9.0/24",), 25, key(5))
    uapi.set(changes(DeviceState(None, 0, {key(1): moved}), state))
    assert uapi.get().peers == {key(1): moved}


def test_the_server_pid_is_wireguard_gos_own(wggo):
    pid = wggo.uapi.server_pid()
    with open(f"/proc/{pid}/comm") as handle:
        assert handle.read().strip() == "wireguard-go"
    wggo.stop()
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert not wggo.running()


def test_a_refused_request_is_an_error_naming_the_device(wggo):
    bad = set_request(Changes(None, (PeerConfig(key(1), "not-an-endpoint", ("10.5.2.0/24",)),)))
    with pytest.raises(HostNetworkError) as info:
        wggo.uapi._request(bad)
    assert wggo.device in str(info.value) and "refused: errno=" in str(info.value)


def test_a_missing_socket_is_a_clear_error(tmp_path):
    with pytest.raises(HostNetworkError) as info:
        Uapi("oflw-none", str(tmp_path / "none.sock")).get()
    assert "is wireguard-go running?" in str(info.value)
