"""The docker bridge's address, set over netlink (what docker itself would do with --bip)."""

from __future__ import annotations

from .deps import netaddr
from .errors import HostNetworkError
from .hostnet import _ipr


def ensure_bridge_address(bridge: str, address: netaddr.IPNetwork, mtu: int | None = None,
                          dry_run: bool = False) -> bool:
    """Make `bridge` exist, be up and carry exactly `address` as its IPv4 address.

    Other IPv4 addresses (docker's default 172.17.0.1/16, an old lease) are removed so that
    the bridge does not route two subnets. Returns whether anything changed."""
    changed = False
    with _ipr() as ipr:
        found = ipr.link_lookup(ifname=bridge)
        if not found:
            changed = True
            if dry_run:
                return True
            ipr.link("add", ifname=bridge, kind="bridge")
            found = ipr.link_lookup(ifname=bridge)
        index = found[0]
        link = ipr.get_links(index)[0]
        kind = (link.get(("IFLA_LINKINFO", "IFLA_INFO_KIND")) or "")
        if kind and kind != "bridge":
            raise HostNetworkError(f"{bridge} exists but is a {kind} device, not a bridge; remove it or pick another")
        current = [(a.get("address"), a["prefixlen"]) for a in ipr.get_addr(family=2, index=index)]
        wanted = (str(address.ip), address.prefixlen)
        for addr, plen in current:
            if (addr, plen) != wanted:
                changed = True
                if not dry_run:
                    ipr.addr("del", index=index, address=addr, prefixlen=plen)
        if wanted not in current:
            changed = True
            if not dry_run:
                ipr.addr("add", index=index, address=wanted[0], prefixlen=wanted[1])
        if mtu is not None and int(link.get("mtu")) != mtu:
            changed = True
            if not dry_run:
                ipr.link("set", index=index, mtu=mtu)
        if not link["flags"] & 1:  # IFF_UP
            changed = True
            if not dry_run:
                ipr.link("set", index=index, state="up")
    return changed


def bridge_ipv4(bridge: str) -> list[tuple[str, int]] | None:
    """The bridge's IPv4 addresses as (address, prefix length); None when it does not exist."""
    with _ipr() as ipr:
        found = ipr.link_lookup(ifname=bridge)
        if not found:
            return None
        return [(a.get("address"), a["prefixlen"]) for a in ipr.get_addr(family=2, index=found[0])]
