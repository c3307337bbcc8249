"""A stable MAC address for this host's VXLAN device (VTEP).

flanneld lets the kernel pick a random MAC, so after a reboot every peer holds a stale
FDB entry and neighbour for the old MAC until it sees the new lease. We derive the MAC
instead, so a rebooted (or re-set-up) host comes back with the same one:

    sha256("overlaynet.flannel/vtep-mac/v1" NUL source NUL VNI NUL public IP)[:6]

where source is "machine-id:<id>" (systemd's /etc/machine-id, or dbus's copy) when it can
be read, else "hostname:<hostname>". The public IP is part of the input because cloned
VM images often share one machine-id; two hosts never share a public IP. The first octet
gets the locally administered bit set and the multicast bit cleared (x2:, x6:, xA:, xE:),
so the MAC can never collide with a vendor-assigned one and is a valid unicast address.
The MAC changes only when the machine-id (or, without one, the hostname), the VNI or the
public IP changes; in each of those cases peers must re-learn this host anyway.
"""

from __future__ import annotations

import hashlib
import re
import socket

MACHINE_ID_PATHS = ("/etc/machine-id", "/var/lib/dbus/machine-id")
_MACHINE_ID = re.compile(r"^[0-9a-f]{32}$")
_DOMAIN = b"overlaynet.flannel/vtep-mac/v1"


def read_machine_id(paths: tuple[str, ...] = MACHINE_ID_PATHS) -> str | None:
    """The first valid machine-id among paths; None when none is readable.

    An empty file or "uninitialized" (systemd's first boot) is not an id: it would give
    every such host the same MAC, and it changes at the next boot."""
    for path in paths:
        try:
            with open(path, encoding="ascii") as handle:
                text = handle.read().strip().lower()
        except (OSError, UnicodeDecodeError):
            continue
        if _MACHINE_ID.match(text):
            return text
    return None


def vtep_mac(vni: int, public_ip: str, machine_id_paths: tuple[str, ...] = MACHINE_ID_PATHS,
             hostname: str | None = None) -> str:
    """The VTEP MAC for this host, as lowercase "aa:bb:cc:dd:ee:ff"."""
    machine_id = read_machine_id(machine_id_paths)
    if machine_id is not None:
        source = f"machine-id:{machine_id}"
    else:
        source = f"hostname:{hostname if hostname is not None else socket.gethostname()}"
    digest = hashlib.sha256(b"\0".join((_DOMAIN, source.encode(), str(int(vni)).encode(),
                                        public_ip.encode()))).digest()
    octets = bytearray(digest[:6])
    octets[0] = (octets[0] & 0xFC) | 0x02  # locally administered, unicast
    return ":".join(f"{b:02x}" for b in octets)
