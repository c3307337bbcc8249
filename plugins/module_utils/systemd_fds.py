"""systemd's file-descriptor store, stdlib only (sd_pid_notify_with_fds / sd_listen_fds_with_names).

A service whose unit has `FileDescriptorStoreMax=` may hand open descriptors to the service
manager (`FDSTORE=1`, `FDNAME=<name>`, the descriptors as SCM_RIGHTS on NOTIFY_SOCKET).
systemd keeps them while the service restarts (including after kill -9, when the unit's
whole cgroup is killed) and passes them to the next process as fds 3, 4, ... with
`LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID` set. What arrives is only as trustworthy as
the process that stored it: callers validate each descriptor before using it.

systemd >= 254 tells the service its store size in `$FDSTORE`; older ones (Debian 12 has
252) do not, so our unit also sets `FLANNELD_FDSTORE` to the same number.
"""

from __future__ import annotations

import array
import fcntl
import logging
import os
import socket
from collections.abc import Mapping, MutableMapping, Sequence

log = logging.getLogger(__name__)
LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START
STORE_SIZE_VARS = ("FDSTORE", "FLANNELD_FDSTORE")
_LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def notify_address(environ: Mapping[str, str]) -> str | None:
    """NOTIFY_SOCKET as a socket address (a leading @ is the abstract namespace)."""
    address = environ.get("NOTIFY_SOCKET") or None
    if address and address.startswith("@"):
        address = "\0" + address[1:]
    return address


def store_size(environ: Mapping[str, str] | None = None) -> int:
    """How many descriptors the service manager keeps for us; 0 outside such a unit."""
    environ = os.environ if environ is None else environ
    if not notify_address(environ):
        return 0
    for var in STORE_SIZE_VARS:
        value = environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 0


def _valid_name(name: str) -> bool:
    return 0 < len(name) <= 255 and name.isprintable() and ":" not in name


def _send(fields: Sequence[str], fds: Sequence[int], environ: Mapping[str, str] | None) -> bool:
    address = notify_address(os.environ if environ is None else environ)
    if not address:
        return False
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendmsg(["\n".join(fields).encode()], ancillary, 0, address)
    except OSError as exc:
        log.warning("could not hand %s to the service manager at %s: %s", fields[-1], address, exc)
        return False
    return True


def store(name: str, fds: Sequence[int], environ: Mapping[str, str] | None = None) -> bool:
    """Hand fds to the service manager under name (it de-duplicates a descriptor sent again)."""
    if not _valid_name(name):
        raise ValueError(f"invalid fd store name {name!r}")
    return _send(["FDSTORE=1", f"FDNAME={name}"], fds, environ)


def remove(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Drop (and let systemd close) every descriptor stored under name."""
    if not _valid_name(name):
        raise ValueError(f"invalid fd store name {name!r}")
    return _send(["FDSTOREREMOVE=1", f"FDNAME={name}"], (), environ)


class Received:
    """The descriptors systemd passed to this process, by name; each claimed at most once."""

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        self._fds: dict[str, list[int]] = {}
        environ = os.environ if environ is None else environ
        values = [environ.pop(var, "") for var in _LISTEN_VARS]  # our children must not see them
        pid, count, names = values
        if pid != str(os.getpid()) or not count.isdigit():
            return  # meant for another process (or none at all): not ours to touch
        labels = names.split(":") if names else []
        for i in range(int(count)):
            fd = LISTEN_FDS_START + i
            try:
                fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.fcntl(fd, fcntl.F_GETFD) | fcntl.FD_CLOEXEC)
            except OSError:
                log.warning("LISTEN_FDS promised fd %d, but it is not open; ignoring it", fd)
                continue
            self._fds.setdefault(labels[i] if i < len(labels) else "unknown", []).append(fd)

    def names(self) -> list[str]:
        return sorted(self._fds)

    def claim(self, name: str) -> list[int]:
        """The descriptors stored under name (the caller now owns and must close them)."""
        return self._fds.pop(name, [])

    def close_unclaimed(self, environ: Mapping[str, str] | None = None) -> list[str]:
        """Close what nobody claimed and drop it from the store (e.g. udp's queue after a
        switch to vxlan); the names, for a log line."""
        left = self.names()
        for name in left:
            for fd in self._fds.pop(name):
                os.close(fd)
            remove(name, environ)
        return left


_received: Received | None = None


def received() -> Received:
    """This process's descriptors from systemd, read from the environment on first use."""
    global _received  # noqa: PLW0603 - the environment is read once per process, by design
    if _received is None:
        _received = Received()
    return _received
