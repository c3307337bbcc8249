"""Running a block of code in another network namespace (tests and the lab use named ones)."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator

from ..errors import HostNetworkError

_CLONE_NEWNET = 0x40000000
_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def in_netns(netns: str | None) -> Iterator[None]:
    """Run the block with this thread in network namespace netns (None: stay where we are).

    Sockets and TUN devices belong to the namespace they were created in and keep working
    from any thread afterwards, so only their creation needs this.
    """
    if netns is None:
        yield
        return
    path = netns if netns.startswith("/") else f"/var/run/netns/{netns}"
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise HostNetworkError(f"network namespace {netns!r} not found ({exc.strerror})") from None
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(saved)
    finally:
        os.close(target)
        os.close(saved)
