"""Open (creating if needed) a persistent TUN device such as flannel0.

The device is made persistent so that it, its address and the route for the overlay network
survive an agent restart: docker and the peers keep their state, and the restarted agent
re-attaches to the same device (same ifindex) instead of rebuilding the data plane. Traffic
pauses only while no process holds the device (the kernel drops it, the carrier is down).

IFF_VNET_HDR + TUNSETOFFLOAD let the kernel hand us GSO super-packets (up to ~64 KiB) with
a virtio_net_hdr in front. The offload and vnet-header size are properties of the device,
so they are set on every attach: a device left by a run in the other mode is reset.
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import struct
from dataclasses import dataclass, field

from ..errors import HostNetworkError
from .netns import in_netns

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNGETFEATURES = 0x800454CF
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
GSO_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
VNET_HDR_SIZE = 10
_IFREQ = struct.Struct("16sH22x")


@dataclass
class TunDevice:
    """An attached TUN queue. Closing it detaches; a persistent device stays."""

    name: str
    fd: int
    vnet_hdr: bool
    offloads: int
    file: io.FileIO = field(repr=False)  # readinto() returns None on EAGAIN: no exception per poll

    def close(self) -> None:
        if self.fd >= 0:
            self.file.close()
            self.fd = -1

    @property
    def closed(self) -> bool:
        return self.fd < 0


def open_tun(name: str, *, vnet_hdr: bool, offloads: int = GSO_OFFLOADS, persist: bool = True,
             netns: str | None = None) -> TunDevice:
    """Create or attach TUN device name (IFF_TUN | IFF_NO_PI [| IFF_VNET_HDR]), non-blocking."""
    if len(name.encode()) > 15:
        raise HostNetworkError(f"TUN device name {name!r} is longer than 15 bytes; choose a shorter name")
    with in_netns(netns):
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            raise HostNetworkError(
                f"cannot open /dev/net/tun ({exc.strerror}); load the tun module (modprobe tun) "
                "and run the agent as root or with CAP_NET_ADMIN"
            ) from None
    try:
        flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
        _attach(fd, name, flags)
        if vnet_hdr:
            fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_SIZE))
        # Also with vnet_hdr off: a device left with offloads would hand us unsegmented
        # super-packets we could not tell apart.
        fcntl.ioctl(fd, TUNSETOFFLOAD, offloads if vnet_hdr else 0)
        fcntl.ioctl(fd, TUNSETPERSIST, 1 if persist else 0)
    except BaseException:
        os.close(fd)
        raise
    return TunDevice(name, fd, vnet_hdr, offloads if vnet_hdr else 0, io.FileIO(fd, "r+b", closefd=True))


def _attach(fd: int, name: str, flags: int) -> None:
    try:
        fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(name.encode(), flags))
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise HostNetworkError(
                f"TUN device {name} is attached by another process; stop the other flannel agent "
                "(flanneld) on this host first"
            ) from None
        if exc.errno == errno.EINVAL:
            raise HostNetworkError(
                f"device {name} exists but is not a single-queue TUN device; delete it "
                f"(ip link delete {name}) and start the agent again"
            ) from None
        if exc.errno == errno.EPERM:
            raise HostNetworkError(f"not permitted to create TUN device {name}; run as root (CAP_NET_ADMIN)") from None
        raise HostNetworkError(f"cannot create TUN device {name}: {exc.strerror}") from None


def delete_persistent(name: str, netns: str | None = None) -> None:
    """Make an unattached persistent TUN non-persistent, which deletes it (tests, uninstall)."""
    dev = open_tun(name, vnet_hdr=False, persist=False, netns=netns)
    dev.close()
