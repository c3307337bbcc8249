"""What a WireGuard device is configured with, whichever path drives it (the kernel over
generic netlink, wireguard-go over UAPI), and the least set of changes that makes it so.

Keys are base64 here (as in leases); each path converts to its own form. Secrets (the
private key, the PSK) are kept out of repr(), so no log line or error can show them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class PeerConfig:
    public_key: str
    endpoint: str  # "ip:port"
    allowed_ips: tuple[str, ...]  # CIDRs, sorted
    keepalive: int = 0  # seconds, 0: off
    psk: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class DeviceState:
    """A device as read back (or as wanted): its key, port and peers by public key."""

    private_key: str | None = field(repr=False)
    listen_port: int
    peers: dict[str, PeerConfig] = field(default_factory=dict)


@dataclass(frozen=True)
class Changes:
    """What to send: the device's key and port (None: already so), peers to set, to remove."""

    device: tuple[str, int] | None = field(repr=False)
    upserts: tuple[PeerConfig, ...] = ()
    removals: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.device is not None or bool(self.upserts) or bool(self.removals)


class WgControl(Protocol):
    """One way of talking to a WireGuard device."""

    path: str  # "kernel" or "wireguard-go", for the log and /stats

    def get(self) -> DeviceState: ...

    def set(self, changes: Changes) -> None: ...


def changes(want: DeviceState, have: DeviceState, stale: bool = True) -> Changes:
    """The changes from `have` to `want`; with `stale`, peers `want` lacks are removed.
    A peer already as wanted is not sent again (its session and handshake stay)."""
    device = None
    if want.private_key is not None and (have.private_key != want.private_key or have.listen_port != want.listen_port):
        device = (want.private_key, want.listen_port)
    upserts = tuple(peer for key, peer in sorted(want.peers.items()) if _differs(have.peers.get(key), peer))
    removals = tuple(sorted(set(have.peers) - set(want.peers))) if stale else ()
    return Changes(device, upserts, removals)


def _differs(have: PeerConfig | None, want: PeerConfig) -> bool:
    if have is None:
        return True
    # wireguard-go reports the PSK as all zeroes when none is set.
    return (have.endpoint, have.allowed_ips, have.keepalive, have.psk or None) != (
        want.endpoint, want.allowed_ips, want.keepalive, want.psk or None)
