"""This host's stable identity, derived from systemd's machine-id (or the hostname).

Two things are derived from it, each with its own domain so neither reveals the other or
the machine-id (systemd asks applications to hash it, never to publish it):
- the vxlan VTEP MAC (backends/vxlan/mac.py), stable across reboots;
- the host id our leases carry (BackendData "Overlaynet": {"Host": ...}), which tells two
  hosts that claim the same PublicIP apart.
"""

from __future__ import annotations

import hashlib
import re
import socket

MACHINE_ID_PATHS = ("/etc/machine-id", "/var/lib/dbus/machine-id")
_MACHINE_ID = re.compile(r"^[0-9a-f]{32}$")
_HOST_ID_DOMAIN = b"overlaynet.flannel/host-id/v1"


def read_machine_id(paths: tuple[str, ...] = MACHINE_ID_PATHS) -> str | None:
    """The first valid machine-id among paths; None when none is readable.

    An empty file or "uninitialized" (systemd's first boot) is not an id: it would give
    every such host the same identity, and it changes at the next boot."""
    for path in paths:
        try:
            with open(path, encoding="ascii") as handle:
                text = handle.read().strip().lower()
        except (OSError, UnicodeDecodeError):
            continue
        if _MACHINE_ID.match(text):
            return text
    return None


def host_source(paths: tuple[str, ...] = MACHINE_ID_PATHS, hostname: str | None = None) -> str:
    """What this host's identities are derived from: "machine-id:<id>", else "hostname:<name>"."""
    machine_id = read_machine_id(paths)
    if machine_id is not None:
        return f"machine-id:{machine_id}"
    return f"hostname:{hostname if hostname is not None else socket.gethostname()}"


def host_id(paths: tuple[str, ...] = MACHINE_ID_PATHS, hostname: str | None = None) -> str:
    """16 hex digits: sha256(domain NUL source)[:8]."""
    source = host_source(paths, hostname)
    return hashlib.sha256(_HOST_ID_DOMAIN + b"\0" + source.encode()).hexdigest()[:16]
