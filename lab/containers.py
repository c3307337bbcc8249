"""Containers: a namespace with ``eth0``, its peer a port of a host's ``docker0`` bridge.

In the light lab a container *name* on host *h* lives in namespace ``<prefix><h>-<name>``;
the host end of its veth is ``vc-<name>`` in the host namespace, attached to ``docker0``
(the bridge is created, up and without an address, when the host has none yet - as docker
would have it before the lab's bridge module gives it the leased subnet).

Its address defaults to the next free address of the host's ``FLANNEL_SUBNET`` (read
from ``<host run dir>/flannel/subnet.env`` with the engine's parser), its default route
goes via the ``FLANNEL_SUBNET`` address (the bridge address), and its MTU is
``FLANNEL_MTU``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from . import netns
from .engine import parse_env_text
from .state import LabError

BRIDGE = "docker0"


def read_subnet_env(path: Path) -> dict[str, str]:
    """The values of a flannel ``subnet.env`` (empty when there is none yet)."""
    return parse_env_text(path.read_text()) if path.exists() else {}


def _interface(value: str, what: str) -> ipaddress.IPv4Interface:
    try:
        return ipaddress.IPv4Interface(value)
    except ValueError as exc:
        raise LabError(f"{what} is not an address/prefix such as 10.5.72.9/24") from exc


def _next_free(subnet_env: Path, bridge_if: ipaddress.IPv4Interface | None, used: set[str]) -> tuple[str, str]:
    """(CIDR, gateway) of the first free address above the bridge's in FLANNEL_SUBNET."""
    if bridge_if is None:
        raise LabError(
            f"no FLANNEL_SUBNET in {subnet_env} (the host has no lease yet): acquire a "
            f"lease first, or give the container an explicit address (--address CIDR)"
        )
    net = bridge_if.network
    taken = used | {str(bridge_if.ip)}
    for cand in net.hosts():
        if cand > bridge_if.ip and str(cand) not in taken:
            return f"{cand}/{net.prefixlen}", str(bridge_if.ip)
    raise LabError(f"no free address left in {net} on this host")


def _explicit(address: str, bridge_if: ipaddress.IPv4Interface | None, used: set[str]) -> tuple[str, str]:
    """(CIDR, gateway) of an address given by the user: the gateway is the bridge address
    when that is in the same network, else the network's first address."""
    iface = _interface(address, f"--address {address!r}")
    if "/" not in address:
        raise LabError(f"--address {address!r} needs a prefix length, e.g. {address}/24")
    if str(iface.ip) in used:
        raise LabError(f"address {iface.ip} is already used by a container on this host")
    if bridge_if is not None and bridge_if.ip in iface.network:
        gateway = str(bridge_if.ip)
    else:
        gateway = str(next(iface.network.hosts()))
    if gateway == str(iface.ip):
        raise LabError(f"--address {address} is the bridge (gateway) address itself")
    return str(iface), gateway


def plan(subnet_env: Path, address: str | None, used: set[str]) -> dict[str, Any]:
    """Work out address (CIDR), gateway and MTU for a new container.

    *used* holds the addresses (no prefix length) of the host's other lab containers.
    """
    env = read_subnet_env(subnet_env)
    mtu = int(env["FLANNEL_MTU"]) if env.get("FLANNEL_MTU", "").isdigit() else 1500
    flannel_subnet = env.get("FLANNEL_SUBNET")
    bridge_if = None
    if flannel_subnet:
        bridge_if = _interface(flannel_subnet, f"{subnet_env}: FLANNEL_SUBNET={flannel_subnet!r}")
    if address is None:
        cidr, gateway = _next_free(subnet_env, bridge_if, used)
    else:
        cidr, gateway = _explicit(address, bridge_if, used)
    return {"address": cidr, "gateway": gateway, "mtu": mtu}


def ensure_bridge(host_ns: str, address: str | None = None, name: str = BRIDGE) -> None:
    """Bridge *name* in *host_ns*, up (created if missing); with *address* (CIDR) on it."""
    if not netns.link_exists(host_ns, name):
        netns.ip_batch(host_ns, [f"link add {name} type bridge", f"link set {name} up"])
    if address:
        have = netns.ip(host_ns, "-o", "-4", "addr", "show", "dev", name)
        if f" {address} " not in have:
            netns.ip(host_ns, "addr", "add", address, "dev", name)


def plug(host_ns: str, ns: str, veth: str, address: str, gateway: str, mtu: int = 1500,
         bridge: str = BRIDGE) -> None:
    """Give container namespace *ns* (already created) an ``eth0`` with *address* (CIDR)
    and a default route via *gateway*; its peer *veth* is a port of *bridge* on *host_ns*."""
    netns.add_veth(ns, "eth0", host_ns, veth, mtu)
    netns.ip_batch(host_ns, [f"link set {veth} master {bridge}", f"link set {veth} up"])
    netns.ip_batch(ns, [
        "link set lo up",
        f"addr add {address} dev eth0",
        "link set eth0 up",
        f"route add default via {gateway} dev eth0",
    ])


def create(host_ns: str, ns: str, name: str, spec: dict[str, Any],
           bridge_address: str | None = None, tag: str = netns.LAB_TAG) -> None:
    """Build the light lab's container namespace *ns* (already recorded in the state)."""
    ensure_bridge(host_ns, bridge_address)
    netns.add(ns, tag)
    plug(host_ns, ns, host_veth(name), spec["address"], spec["gateway"], spec["mtu"])


def host_veth(name: str) -> str:
    return f"vc-{name}"
