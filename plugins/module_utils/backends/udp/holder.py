"""Where flannel0's queue and the UDP socket wait while the agent restarts.

Under a systemd unit with a file-descriptor store (`FileDescriptorStoreMax=`, see
systemd_fds.py) systemd holds them: the unit's cgroup, and any keeper in it, is killed
before `Restart=` starts the next agent, but the store survives. Elsewhere a keeper process
holds them (keeper.py). Either way the next agent validates what it gets (handover.py).
"""

from __future__ import annotations

import logging
import os
from typing import Protocol

from ... import systemd_fds
from . import handover
from .keeper import Keeper, take_over

TUN_FDNAME = "udp-tun"
SOCKET_FDNAME = "udp-socket"
log = logging.getLogger(__name__)


class Holder(Protocol):
    def take(self, tun_name: str, vnet_hdr: bool, address: tuple[str, int]) -> tuple[int, int] | None:
        """The previous agent's (tun fd, socket fd), validated; None when there are none."""

    def keep(self, tun_fd: int, sock_fd: int, tun_name: str, vnet_hdr: bool, address: tuple[str, int]) -> None:
        """Hold these (replacing what was held) for the next agent."""

    def drop(self) -> None:
        """What is held is stale (device or socket replaced): let it go now."""

    def release(self) -> None:
        """The agent is stopping: leave what is held for the next agent."""


def make_holder() -> Holder:
    return FdStoreHolder() if systemd_fds.store_size() >= 2 else KeeperHolder()


class FdStoreHolder:
    """systemd's fd store: FDSTORE=1 on the way out, LISTEN_FDS on the way back in."""

    def __init__(self) -> None:
        self._stored: tuple[int, int] | None = None

    def take(self, tun_name: str, vnet_hdr: bool, address: tuple[str, int]) -> tuple[int, int] | None:
        got = systemd_fds.received()
        tuns, socks = got.claim(TUN_FDNAME), got.claim(SOCKET_FDNAME)
        if not tuns and not socks:
            return None
        if len(tuns) != 1 or len(socks) != 1:
            log.warning("systemd's fd store passed %d TUN and %d socket descriptors, wanted one of each; "
                        "ignoring them and opening fresh ones", len(tuns), len(socks))
            for fd in (*tuns, *socks):
                os.close(fd)
            _remove()
            return None
        if not handover.accept(tuns[0], socks[0], name=tun_name, vnet_hdr=vnet_hdr, address=address,
                               source="systemd's fd store"):
            _remove()
            return None
        self._stored = (tuns[0], socks[0])  # systemd still holds its copies
        log.info("took over %s and UDP %s:%d from systemd's fd store: no packet lost in between",
                 tun_name, *address)
        return tuns[0], socks[0]

    def keep(self, tun_fd: int, sock_fd: int, tun_name: str, vnet_hdr: bool, address: tuple[str, int]) -> None:
        if (tun_fd, sock_fd) == self._stored:
            return
        if self._stored is not None:
            self.drop()
        # A descriptor systemd already holds (the ones we took over) is not stored twice.
        if systemd_fds.store(TUN_FDNAME, [tun_fd]) and systemd_fds.store(SOCKET_FDNAME, [sock_fd]):
            self._stored = (tun_fd, sock_fd)
            log.debug("handed %s and UDP %s:%d to systemd's fd store", tun_name, *address)

    def drop(self) -> None:
        if self._stored is not None:
            _remove()
            self._stored = None

    def release(self) -> None:
        self._stored = None  # systemd keeps them across the restart: nothing of ours to drop now


def _remove() -> None:
    systemd_fds.remove(TUN_FDNAME)
    systemd_fds.remove(SOCKET_FDNAME)


class KeeperHolder:
    """A keeper process, outside systemd (or under a unit without an fd store)."""

    def __init__(self, directory: str | None = None) -> None:
        self._keeper = Keeper() if directory is None else Keeper(directory)
        self._kept: tuple[int, int] | None = None

    def take(self, tun_name: str, vnet_hdr: bool, address: tuple[str, int]) -> tuple[int, int] | None:
        got = take_over(tun_name, address[1], directory=self._keeper.directory)
        if got is None:
            return None
        tun_fd, sock_fd, meta = got
        if meta.get("vnet_hdr") != vnet_hdr or meta.get("bound") != list(address):
            os.close(tun_fd)  # another mode or address: start afresh
            os.close(sock_fd)
            return None
        if not handover.accept(tun_fd, sock_fd, name=tun_name, vnet_hdr=vnet_hdr, address=address,
                               source="the previous agent's keeper"):
            return None
        log.info("took over %s and UDP %s:%d from the previous agent: no packet lost in between",
                 tun_name, *address)
        return tun_fd, sock_fd

    def keep(self, tun_fd: int, sock_fd: int, tun_name: str, vnet_hdr: bool, address: tuple[str, int]) -> None:
        if (tun_fd, sock_fd) == self._kept:
            return
        self._keeper.start(tun_fd, sock_fd, tun_name, address[1], {"vnet_hdr": vnet_hdr, "bound": list(address)})
        self._kept = (tun_fd, sock_fd)

    def drop(self) -> None:
        self._keeper.stop()
        self._kept = None

    def release(self) -> None:
        self._keeper.release()
        self._kept = None
