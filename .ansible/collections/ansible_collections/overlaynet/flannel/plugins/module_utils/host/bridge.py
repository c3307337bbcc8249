"""The docker bridge's address, set over netlink (what docker itself would do with --bip)."""

from __future__ import annotations

from ..deps import netaddr
from ..errors import HostNetworkError
from . import netlink as nl


def ensure_bridge_address(bridge: str, address: netaddr.IPNetwork, dry_run: bool = False) -> bool:
    """Make `bridge` exist, be up and carry exactly `address` as its IPv4 address.

    Other IPv4 addresses (docker's default 172.17.0.1/16, an old lease) are removed so that
    the bridge does not route two subnets. Returns whether anything changed (or would)."""
    with nl.open_ipr() as ipr:
        index = nl.link_index(ipr, bridge)
        if index is None:
            if dry_run:
                return True
            nl.call(f"creating bridge {bridge}", ipr.link, "add", ifname=bridge, kind="bridge")
            index = nl.link_index(ipr, bridge)
        link = nl.get_link(ipr, index) if index is not None else None
        if index is None or link is None:
            raise HostNetworkError(f"{bridge} vanished while it was being set up; run again")
        kind = nl.link_kind(link)
        if kind and kind != "bridge":
            raise HostNetworkError(f"{bridge} exists but is a {kind} device, not a bridge; remove it or pick another")
        if dry_run:
            return _pairs(nl.ipv4_addresses(ipr, index)) != _pairs([address]) or not link["flags"] & nl.IFF_UP
        changed = nl.ensure_only_ipv4_address(ipr, index, bridge, address)
        return nl.ensure_link_up(ipr, link) or changed


def bridge_ipv4(bridge: str) -> list[tuple[str, int]] | None:
    """The bridge's IPv4 addresses as (address, prefix length); None when it does not exist."""
    with nl.open_ipr() as ipr:
        index = nl.link_index(ipr, bridge)
        return None if index is None else _pairs(nl.ipv4_addresses(ipr, index))


def _pairs(nets: list[netaddr.IPNetwork]) -> list[tuple[str, int]]:
    # netaddr compares networks by range: 10.5.72.1/24 == 10.5.72.2/24. Addresses are not.
    return [(str(net.ip), net.prefixlen) for net in nets]
