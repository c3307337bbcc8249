"""The kernel's wireguard over generic netlink ("wireguard" family, WG_CMD_*), through
pyroute2's message class: where the kernel has the module, the device is of kind wireguard
and configured with one WG_CMD_SET_DEVICE per change set.

The messages are built by ``set_message`` (tested by decoding them back: these machines'
kernel has no wireguard module, so the requests themselves are not exercised here).
"""

from __future__ import annotations

import base64
import errno
import socket
from typing import Any

from ...deps import pyroute2
from ...errors import HostNetworkError
from ...host.netns import in_netns
from .device import Changes, DeviceState, PeerConfig

WGPEER_F_REMOVE_ME = 1
WGPEER_F_REPLACE_ALLOWEDIPS = 2
WG_CMD_GET_DEVICE = 0
WG_CMD_SET_DEVICE = 1
WG_GENL_VERSION = 1


def _wgmsg() -> Any:
    if pyroute2 is None:
        raise HostNetworkError("the pyroute2 package is missing; pip install pyroute2")
    return pyroute2.netlink.generic.wireguard.wgmsg()


def set_message(device: str, changes: Changes) -> Any:
    """The WG_CMD_SET_DEVICE message for `changes` (not yet encoded)."""
    msg = _wgmsg()
    msg["cmd"] = WG_CMD_SET_DEVICE
    msg["version"] = WG_GENL_VERSION
    msg["attrs"].append(["WGDEVICE_A_IFNAME", device])
    if changes.device is not None:
        private_key, port = changes.device
        msg["attrs"].append(["WGDEVICE_A_PRIVATE_KEY", private_key])
        msg["attrs"].append(["WGDEVICE_A_LISTEN_PORT", port])
    peers = [_removal(key) for key in changes.removals] + [_peer(peer) for peer in changes.upserts]
    if peers:
        msg["attrs"].append(["WGDEVICE_A_PEERS", peers])
    return msg


def _removal(key: str) -> dict[str, Any]:
    return {"attrs": [["WGPEER_A_PUBLIC_KEY", key], ["WGPEER_A_FLAGS", WGPEER_F_REMOVE_ME]]}


def _peer(peer: PeerConfig) -> dict[str, Any]:
    host, _sep, port = peer.endpoint.rpartition(":")
    attrs: list[list[Any]] = [
        ["WGPEER_A_PUBLIC_KEY", peer.public_key],
        ["WGPEER_A_FLAGS", WGPEER_F_REPLACE_ALLOWEDIPS],
        ["WGPEER_A_PRESHARED_KEY", peer.psk or base64.b64encode(bytes(32)).decode()],
        ["WGPEER_A_ENDPOINT", {"addr": host, "port": int(port)}],
        ["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", peer.keepalive],
        ["WGPEER_A_ALLOWEDIPS", [_allowed_ip(cidr) for cidr in peer.allowed_ips]],
    ]
    return {"attrs": attrs}


def _allowed_ip(cidr: str) -> dict[str, Any]:
    addr, _sep, length = cidr.partition("/")
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    return {"attrs": [["WGALLOWEDIP_A_FAMILY", family], ["WGALLOWEDIP_A_IPADDR", socket.inet_pton(family, addr)],
                      ["WGALLOWEDIP_A_CIDR_MASK", int(length)]]}


def state_of(messages: list[Any]) -> DeviceState:
    """A WG_CMD_GET_DEVICE answer (one or more messages: big devices are split) as a DeviceState."""
    private_key: str | None = None
    port = 0
    peers: dict[str, PeerConfig] = {}
    for msg in messages:
        private_key = msg.get_attr("WGDEVICE_A_PRIVATE_KEY") or private_key
        port = msg.get_attr("WGDEVICE_A_LISTEN_PORT") or port
        for peer in msg.get_attr("WGDEVICE_A_PEERS") or []:
            parsed = _parsed_peer(peer)
            peers[parsed.public_key] = parsed
    zero = base64.b64encode(bytes(32)).decode()
    return DeviceState(None if private_key in (None, zero) else _text(private_key), int(port), peers)


def _parsed_peer(peer: Any) -> PeerConfig:
    endpoint = peer.get_attr("WGPEER_A_ENDPOINT") or {}
    allowed = sorted(f"{a['addr']}/{a['cidr']}" if isinstance(a, dict) else str(a)
                     for a in (peer.get_attr("WGPEER_A_ALLOWEDIPS") or []))
    psk = peer.get_attr("WGPEER_A_PRESHARED_KEY")
    zero = base64.b64encode(bytes(32)).decode()
    return PeerConfig(_text(peer.get_attr("WGPEER_A_PUBLIC_KEY")),
                      f"{endpoint.get('addr')}:{endpoint.get('port')}" if endpoint else "",
                      tuple(allowed), int(peer.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL") or 0),
                      None if psk in (None, zero) else _text(psk))


def _text(key: Any) -> str:
    return key.decode() if isinstance(key, bytes) else str(key)


class KernelWg:
    """The kernel's wireguard device `device`, over generic netlink."""

    path = "kernel"

    def __init__(self, device: str, netns: str | None = None) -> None:
        self.device = device
        self.netns = netns

    def get(self) -> DeviceState:
        return state_of(self._talk(WG_CMD_GET_DEVICE, None))

    def set(self, changes: Changes) -> None:
        if changes:
            self._talk(WG_CMD_SET_DEVICE, set_message(self.device, changes))

    def _talk(self, cmd: int, msg: Any) -> list[Any]:
        if pyroute2 is None:
            raise HostNetworkError("the pyroute2 package is missing; pip install pyroute2")
        try:
            with in_netns(self.netns):
                wg = pyroute2.WireGuard()  # the generic netlink family only exists with the module
            try:
                if cmd == WG_CMD_GET_DEVICE:
                    return list(wg.info(self.device))
                return [wg.nlm_request(msg, msg_type=wg.prid, msg_flags=0x1 | 0x4)]  # NLM_F_REQUEST | NLM_F_ACK
            finally:
                wg.close()
        except (OSError, pyroute2.NetlinkError) as exc:
            code = getattr(exc, "code", None) or getattr(exc, "errno", None) or 0
            raise HostNetworkError(f"wireguard netlink request for {self.device} failed: "
                                   f"{errno.errorcode.get(code, code)}") from None
