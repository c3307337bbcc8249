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

from ...identity import MACHINE_ID_PATHS, host_source

_DOMAIN = b"overlaynet.flannel/vtep-mac/v1"


def vtep_mac(vni: int, public_ip: str, machine_id_paths: tuple[str, ...] = MACHINE_ID_PATHS,
             hostname: str | None = None) -> str:
    """The VTEP MAC for this host, as lowercase "aa:bb:cc:dd:ee:ff"."""
    source = host_source(machine_id_paths, hostname)
    digest = hashlib.sha256(b"\0".join((_DOMAIN, source.encode(), str(int(vni)).encode(),
                                        public_ip.encode()))).digest()
    octets = bytearray(digest[:6])
    octets[0] = (octets[0] & 0xFC) | 0x02  # locally administered, unicast
    return ":".join(f"{b:02x}" for b in octets)
