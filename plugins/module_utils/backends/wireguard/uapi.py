"""A client of the WireGuard cross-platform UAPI (wireguard-go's control socket,
``/var/run/wireguard/<device>.sock``): ``get=1`` reads the device, ``set=1`` changes it,
``key=value`` lines ending with an empty line, answered with ``errno=N``.

Keys travel as hex there. The answer to get=1 holds the private key: it is parsed here and
never logged or put into an error.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

from ...errors import HostNetworkError
from .device import Changes, DeviceState, PeerConfig
from .key_text import from_hex, to_hex

SOCKET_DIR = "/var/run/wireguard"
_ZERO_KEY = "0" * 64
_TIMEOUT = 5.0


def socket_path(device: str) -> str:
    return f"{SOCKET_DIR}/{device}.sock"


class Uapi:
    """The UAPI of one device (a connection per request, as wg(8) does)."""

    path = "wireguard-go"

    def __init__(self, device: str, sock_path: str | None = None) -> None:
        self.device = device
        self.sock_path = sock_path or socket_path(device)

    def get(self) -> DeviceState:
        lines = self._request("get=1\n\n")
        return parse_get(lines)

    def set(self, changes: Changes) -> None:
        if changes:
            self._request(set_request(changes))

    def server_pid(self) -> int:
        """The PID of the process serving the socket (SO_PEERCRED): wireguard-go itself."""
        with self._connect() as sock:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return int(struct.unpack("3i", creds)[0])

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(_TIMEOUT)
        try:
            sock.connect(self.sock_path)
        except OSError as exc:
            sock.close()
            raise HostNetworkError(f"cannot reach {self.device}'s UAPI socket {self.sock_path}: "
                                   f"{exc.strerror or exc}; is wireguard-go running?") from None
        return sock

    def _request(self, text: str) -> list[str]:
        """Send one request; the answer's lines (errno line checked and dropped)."""
        what = text.split("\n", 1)[0]
        with self._connect() as sock:
            try:
                sock.sendall(text.encode())
                answer = _read_answer(sock)
            except OSError as exc:
                raise HostNetworkError(f"{self.device} UAPI {what} failed: {exc}") from None
        lines = answer.split("\n")
        status = lines[-1] if lines and lines[-1].startswith("errno=") else None
        if status is None:
            raise HostNetworkError(f"{self.device} UAPI {what}: the answer ends without errno=")
        if status != "errno=0":
            raise HostNetworkError(f"{self.device} UAPI {what} was refused: {status}")
        return lines[:-1]


def _read_answer(sock: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip("\n")


def set_request(changes: Changes) -> str:
    """The text of a set=1 request for `changes`."""
    lines = ["set=1"]
    if changes.device is not None:
        private_key, port = changes.device
        lines += [f"private_key={to_hex(private_key)}", f"listen_port={port}"]
    for key in changes.removals:
        lines += [f"public_key={to_hex(key)}", "remove=true"]
    for peer in changes.upserts:
        lines += [f"public_key={to_hex(peer.public_key)}",
                  f"preshared_key={to_hex(peer.psk) if peer.psk else _ZERO_KEY}",
                  f"endpoint={peer.endpoint}",
                  f"persistent_keepalive_interval={peer.keepalive}",
                  "replace_allowed_ips=true"]
        lines += [f"allowed_ip={cidr}" for cidr in peer.allowed_ips]
    return "\n".join(lines) + "\n\n"


@dataclass
class _PeerLines:
    """One peer's lines of a get=1 answer, as they come."""

    endpoint: str = ""
    keepalive: int = 0
    psk: str | None = None
    allowed: list[str] = field(default_factory=list)

    def take(self, key: str, value: str) -> None:
        if key == "allowed_ip":
            self.allowed.append(value)
        elif key == "endpoint":
            self.endpoint = value
        elif key == "persistent_keepalive_interval":
            self.keepalive = int(value or 0)
        elif key == "preshared_key" and value != _ZERO_KEY:
            self.psk = from_hex(value)

    def config(self, public_key: str) -> PeerConfig:
        return PeerConfig(public_key, self.endpoint, tuple(sorted(self.allowed)), self.keepalive, self.psk)


def parse_get(lines: list[str]) -> DeviceState:
    """A get=1 answer (without its errno line) as a DeviceState."""
    private_key: str | None = None
    port = 0
    peers: dict[str, _PeerLines] = {}
    current: _PeerLines | None = None
    for line in lines:
        key, _sep, value = line.partition("=")
        if key == "public_key":
            current = peers.setdefault(from_hex(value), _PeerLines())
        elif current is not None:
            current.take(key, value)
        elif key == "private_key" and value != _ZERO_KEY:
            private_key = from_hex(value)
        elif key == "listen_port":
            port = int(value)
    return DeviceState(private_key, port, {key: lines_.config(key) for key, lines_ in peers.items()})
