"""The underlay: one bridge ``br0`` in a namespace of its own (the switch).

Every node (host or etcd member) is a namespace with an ``eth0`` veth whose peer is a port
of that bridge (:func:`plug`). In the light lab the switch is ``<prefix>underlay`` and the
port of node *n* is ``v-<n>``. The root namespace has no address or route for the underlay
subnet and no interface on it.
"""

from __future__ import annotations

import ipaddress

from . import netns
from .state import LabError

BRIDGE = "br0"
MTU = 1500


def underlay_ns(prefix: str) -> str:
    return f"{prefix}underlay"


def make_switch(ns: str, address: str | None = None, mtu: int = MTU) -> None:
    """The bridge in (existing) namespace *ns*; with *address* (CIDR) the switch namespace
    is itself a node of the underlay."""
    netns.ip_batch(ns, [
        "link set lo up",
        f"link add {BRIDGE} mtu {mtu} type bridge stp_state 0 forward_delay 0",
        *([f"addr add {address} dev {BRIDGE}"] if address else []),
        f"link set {BRIDGE} up",
    ])


def create(prefix: str, tag: str | None = netns.LAB_TAG) -> str:
    """Create the light lab's underlay namespace and its bridge; return the namespace name."""
    ns = underlay_ns(prefix)
    netns.add(ns, tag)
    make_switch(ns)
    return ns


def node_address(subnet: str, offset: int) -> str:
    """The address ``<subnet network> + offset`` (no prefix length)."""
    net = ipaddress.ip_network(subnet)
    if offset < 1 or offset >= net.num_addresses - 1:
        raise LabError(f"underlay {subnet} has no room for host offset {offset}; "
                       f"use a larger --subnet")
    return str(net.network_address + offset)


def plug(switch_ns: str, ns: str, port: str, address: str, mtu: int = MTU,
         default_route: bool = False) -> None:
    """Give namespace *ns* (already created) an ``eth0`` with *address* (CIDR) whose peer
    *port* is a port of the switch in *switch_ns*.

    With *default_route*, add ``default dev eth0`` inside *ns* (hosts: so the default
    interface - Ansible's ``ansible_default_ipv4``, flanneld without ``--iface`` - is
    ``eth0`` as on a real host; there is no gateway, nothing leaves the underlay)."""
    plug_nic(switch_ns, ns, "eth0", port, address, mtu, default_route)


def plug_nic(switch_ns: str, ns: str, iface: str, port: str, address: str, mtu: int = MTU,
             default_route: bool = False) -> None:
    """Give namespace *ns* a NIC *iface* with *address* (CIDR) on the switch in *switch_ns*
    (port *port*): ``eth0``, or a second NIC on another switch (a host with two networks,
    for the underlay choice: ``--iface``, ``--iface-regex``, ``--iface-can-reach``)."""
    netns.add_veth(ns, iface, switch_ns, port, mtu)
    netns.ip_batch(ns, [
        "link set lo up",
        f"addr add {address} dev {iface}",
        f"link set {iface} up",
        *([f"route add default dev {iface}"] if default_route else []),
    ])
    netns.ip_batch(switch_ns, [f"link set {port} master {BRIDGE}", f"link set {port} up"])


def attach(prefix: str, ns: str, node: str, address: str, subnet: str,
           default_route: bool = False) -> None:
    """Plug light-lab node *node* (namespace *ns*) into the underlay at *address*."""
    plen = ipaddress.ip_network(subnet).prefixlen
    plug(underlay_ns(prefix), ns, f"v-{node}", f"{address}/{plen}", MTU, default_route)


def detach(prefix: str, node: str) -> None:
    """Remove the bridge port of *node* (and with it the node's eth0)."""
    uns = underlay_ns(prefix)
    if netns.exists(uns):
        netns.ip(uns, "link", "del", f"v-{node}", check=False)
