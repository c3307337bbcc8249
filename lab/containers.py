"""Lab containers: a namespace with ``eth0``, its peer a port of the host's ``docker0``.

A container *name* on host *h* lives in namespace ``<prefix><h>-<name>``; the host end
of its veth is ``vc-<name>`` in the host namespace, attached to ``docker0`` (the bridge is
created, up and without an address, when the host has none yet - as docker would have
it before the lab's bridge module gives it the leased subnet).

Its address defaults to the next free address of the host's ``FLANNEL_SUBNET`` (read
from ``<host run dir>/flannel/subnet.env``), its default route goes via the
``FLANNEL_SUBNET`` address (the bridge address), and its MTU is ``FLANNEL_MTU``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from . import netns
from .state import LabError

BRIDGE = "docker0"


def read_subnet_env(path: Path) -> dict[str, str]:
    """Parse a flannel ``subnet.env`` (KEY=VALUE lines)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip('"')
    return values


def plan(subnet_env: Path, address: str | None, used: set[str]) -> dict[str, Any]:
    """Work out address (CIDR), gateway and MTU for a new container.

    *used* holds the addresses (no prefix length) of the host's other lab containers.
    """
    env: dict[str, str] = {}
    if subnet_env.exists():
        env = read_subnet_env(subnet_env)
    flannel_subnet = env.get("FLANNEL_SUBNET")
    mtu = 1500
    if env.get("FLANNEL_MTU", "").isdigit():
        mtu = int(env["FLANNEL_MTU"])
    if flannel_subnet:
        try:
            bridge_if = ipaddress.ip_interface(flannel_subnet)
        except ValueError as exc:
            raise LabError(f"{subnet_env}: FLANNEL_SUBNET={flannel_subnet!r} is not an "
                           f"address/prefix") from exc
    if address is None:
        if not flannel_subnet:
            raise LabError(
                f"no FLANNEL_SUBNET in {subnet_env} (the host has no lease yet): acquire a "
                f"lease first, or give the container an explicit address (--address CIDR)"
            )
        net = bridge_if.network
        taken = used | {str(bridge_if.ip)}
        for cand in net.hosts():
            if cand > bridge_if.ip and str(cand) not in taken:
                cidr = f"{cand}/{net.prefixlen}"
                break
        else:
            raise LabError(f"no free address left in {net} on this host")
        gateway = str(bridge_if.ip)
    else:
        try:
            iface = ipaddress.ip_interface(address)
        except ValueError as exc:
            raise LabError(f"--address {address!r} is not an address/prefix such as "
                           f"10.5.72.9/24") from exc
        if "/" not in address:
            raise LabError(f"--address {address!r} needs a prefix length, e.g. {address}/24")
        if str(iface.ip) in used:
            raise LabError(f"address {iface.ip} is already used by a container on this host")
        cidr = str(iface)
        if flannel_subnet and bridge_if.ip in iface.network:
            gateway = str(bridge_if.ip)
        else:
            gateway = str(next(iface.network.hosts()))
        if gateway == str(iface.ip):
            raise LabError(f"--address {address} is the bridge (gateway) address itself")
    return {"address": cidr, "gateway": gateway, "mtu": mtu}


def create(host_ns: str, ns: str, name: str, spec: dict[str, Any],
           bridge_address: str | None = None, tag: str = netns.LAB_TAG) -> None:
    """Build the container namespace *ns* (already recorded in the state) on *host_ns*."""
    if not netns.link_exists(host_ns, BRIDGE):
        netns.ip_batch(host_ns, [f"link add {BRIDGE} type bridge", f"link set {BRIDGE} up"])
    if bridge_address:
        have = netns.ip(host_ns, "-o", "-4", "addr", "show", "dev", BRIDGE)
        if f" {bridge_address} " not in have:
            netns.ip(host_ns, "addr", "add", bridge_address, "dev", BRIDGE)
    netns.add(ns, tag)
    veth = host_veth(name)
    netns.add_veth(ns, "eth0", host_ns, veth, spec["mtu"])
    netns.ip_batch(host_ns, [f"link set {veth} master {BRIDGE}", f"link set {veth} up"])
    netns.ip_batch(ns, [
        "link set lo up",
        f"addr add {spec['address']} dev eth0",
        "link set eth0 up",
        f"route add default via {spec['gateway']} dev eth0",
    ])


def host_veth(name: str) -> str:
    return f"vc-{name}"
