"""The underlay: one bridge ``br0`` in its own namespace ``<prefix>underlay``.

Every lab node (host or etcd member) is a namespace with an ``eth0`` veth whose peer
``v-<node>`` is a port of that bridge. The root namespace has no address or route for
the underlay subnet and no interface on it.
"""

from __future__ import annotations

import ipaddress

from . import netns
from .state import LabError

BRIDGE = "br0"
MTU = 1500


def underlay_ns(prefix: str) -> str:
    return f"{prefix}underlay"


def create(prefix: str, tag: str = netns.LAB_TAG) -> str:
    """Create the underlay namespace and its bridge; return the namespace name."""
    ns = underlay_ns(prefix)
    netns.add(ns, tag)
    netns.ip_batch(ns, [
        "link set lo up",
        f"link add {BRIDGE} mtu {MTU} type bridge stp_state 0 forward_delay 0",
        f"link set {BRIDGE} up",
    ])
    return ns


def node_address(subnet: str, offset: int) -> str:
    """The address ``<subnet network> + offset`` (no prefix length)."""
    net = ipaddress.ip_network(subnet)
    if offset < 1 or offset >= net.num_addresses - 1:
        raise LabError(f"underlay {subnet} has no room for host offset {offset}; "
                       f"use a larger --subnet")
    return str(net.network_address + offset)


def attach(prefix: str, ns: str, node: str, address: str, subnet: str,
           default_route: bool = False) -> None:
    """Give namespace *ns* (already created) an ``eth0`` on the underlay with *address*.

    With *default_route*, add ``default dev eth0`` inside *ns* (hosts: so the default
    interface - Ansible's ``ansible_default_ipv4``, flanneld without ``--iface`` - is
    ``eth0`` as on a real host; there is no gateway, nothing leaves the underlay)."""
    plen = ipaddress.ip_network(subnet).prefixlen
    uns = underlay_ns(prefix)
    port = f"v-{node}"
    netns.add_veth(ns, "eth0", uns, port, MTU)
    netns.ip_batch(ns, [
        "link set lo up",
        f"addr add {address}/{plen} dev eth0",
        "link set eth0 up",
        *(["route add default dev eth0"] if default_route else []),
    ])
    netns.ip_batch(uns, [f"link set {port} master {BRIDGE}", f"link set {port} up"])


def detach(prefix: str, node: str) -> None:
    """Remove the bridge port of *node* (and with it the node's eth0)."""
    uns = underlay_ns(prefix)
    if netns.exists(uns):
        netns.ip(uns, "link", "del", f"v-{node}", check=False)
