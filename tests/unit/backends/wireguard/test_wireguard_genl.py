"""The kernel path: the WG_CMD_SET_DEVICE messages built for the kernel's wireguard.

These machines' kernel has no wireguard module, so the requests are not sent here; the
messages are encoded and decoded back with pyroute2's wireguard message class, as the
kernel's generic netlink family would receive them.
"""

from __future__ import annotations

import base64
import socket

from pyroute2.netlink.generic.wireguard import wgmsg

from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.wireguard import genl
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.wireguard.device import (
    Changes,
    PeerConfig,
)


def key(n: int) -> str:
    return base64.b64encode(bytes([n]) * 32).decode()


def roundtrip(changes: Changes):
    msg = genl.set_message("flannel-wg", changes)
    msg.encode()
    back = wgmsg(msg.data)
    back.decode()
    return back


def test_kernel_message_sets_key_port_and_peers():
    peer = PeerConfig(key(1), "192.168.81.12:51820", ("10.5.2.0/24",), 25, key(5))
    back = roundtrip(Changes((key(9), 51820), (peer,), (key(3),)))
    assert back["cmd"] == genl.WG_CMD_SET_DEVICE and back["version"] == 1
    assert back.get_attr("WGDEVICE_A_IFNAME") == "flannel-wg"
    assert back.get_attr("WGDEVICE_A_LISTEN_PORT") == 51820
    assert base64.b64decode(back.get_attr("WGDEVICE_A_PRIVATE_KEY")) == bytes([9]) * 32
    removal, added = back.get_attr("WGDEVICE_A_PEERS")
    assert base64.b64decode(removal.get_attr("WGPEER_A_PUBLIC_KEY")) == bytes([3]) * 32
    assert removal.get_attr("WGPEER_A_FLAGS") == genl.WGPEER_F_REMOVE_ME
    assert base64.b64decode(added.get_attr("WGPEER_A_PUBLIC_KEY")) == bytes([1]) * 32
    assert added.get_attr("WGPEER_A_FLAGS") == genl.WGPEER_F_REPLACE_ALLOWEDIPS
    assert base64.b64decode(added.get_attr("WGPEER_A_PRESHARED_KEY")) == bytes([5]) * 32
    assert added.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL") == 25
    endpoint = added.get_attr("WGPEER_A_ENDPOINT")
    assert (endpoint["addr"], endpoint["port"], endpoint["family"]) == ("192.168.81.12", 51820, socket.AF_INET)
    (allowed,) = added.get_attr("WGPEER_A_ALLOWEDIPS")
    assert allowed.get_attr("WGALLOWEDIP_A_FAMILY") == socket.AF_INET
    assert allowed.get_attr("WGALLOWEDIP_A_CIDR_MASK") == 24


def test_kernel_message_without_device_part_or_peers_names_only_the_device():
    back = roundtrip(Changes(None))
    assert back.get_attr("WGDEVICE_A_IFNAME") == "flannel-wg"
    for attr in ("WGDEVICE_A_PRIVATE_KEY", "WGDEVICE_A_LISTEN_PORT", "WGDEVICE_A_PEERS"):
        assert back.get_attr(attr) is None


def test_kernel_message_clears_a_psk_that_is_no_longer_configured():
    back = roundtrip(Changes(None, (PeerConfig(key(1), "192.168.81.12:51820", ("10.5.2.0/24",)),)))
    (added,) = back.get_attr("WGDEVICE_A_PEERS")
    assert base64.b64decode(added.get_attr("WGPEER_A_PRESHARED_KEY")) == bytes(32)
    assert added.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL") == 0
