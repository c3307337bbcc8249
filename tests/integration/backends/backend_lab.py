"""What the backend tests share: engine objects for the rig's hosts, and the data plane.

The hosts are a ``lab.rig.Rig`` (fixture in conftest.py)::

    oflb-<id>-ul   underlay namespace: bridge br0 (192.168.81.0/24 lives only on its ports)
    oflb-<id>-hN   host N: eth0 192.168.81.1N/24 on br0, docker0 10.5.N.1/24, ip_forward on
    oflb-<id>-cN   container N: eth0 10.5.N.2/24 in host N's docker0, default via 10.5.N.1

Here: the LocalHost and Lease of a host, starting a backend on every host, reading a
host's data plane with pyroute2 dumps, and watching it for netlink changes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute

from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.base import LocalHost
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.registry import make_backend
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.config import NetworkConfig
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.lease import Lease, LeaseAttrs
from lab import netns
from lab.rig import Host

NETWORK = "10.5.0.0/16"
RTPROT = 70  # the protocol our routes carry (netlink.RTPROT_OVERLAYNET)


def local_host(h: Host) -> LocalHost:
    return LocalHost(h.public_ip, "eth0", h.iface_index, 1500, netns=h.ns)


def host_lease(h: Host, backend_type: str, backend_data: dict | None = None) -> Lease:
    return Lease(h.subnet, LeaseAttrs(h.public_ip, None, backend_type, backend_data))


def config(backend: dict) -> NetworkConfig:
    return NetworkConfig.from_dict({"Network": NETWORK, "Backend": backend})


def start(lab: Any, backend: dict) -> tuple[dict[int, Any], dict[int, Lease]]:
    """setup + activate on every host, then add every other host's lease: (backends, leases)."""
    cfg = config(backend)
    backends, leases = {}, {}
    for h in lab.hosts:
        backends[h.n] = make_backend(cfg, local_host(h))
        done = backends[h.n].setup(cfg, local_host(h))
        backends[h.n].activate(h.subnet)
        leases[h.n] = host_lease(h, done.backend_type, done.backend_data)
    for h in lab.hosts:
        for other in lab.hosts:
            if other is not h:
                backends[h.n].add_peer(leases[other.n])
    return backends, leases


def peers_of(h: Any, leases: dict[int, Lease]) -> dict[str, Lease]:
    """Every lease but h's own, keyed as the agent keys peers."""
    return {held.key: held for n, held in leases.items() if n != h.n}


def count_dumps(backend: Any) -> list[int | None]:
    """Spy on one backend's table dumps, one per full repair round (a skipped round dumps
    nothing): the list grows by one per dump."""
    dumps: list[int | None] = []
    tables = backend._tables

    def counted(index: int | None) -> Any:
        dumps.append(index)
        return tables(index)

    backend._tables = counted
    return dumps


def brought_to_rest(backend: Any, peers: dict[str, Lease], h: Any, peer: Any) -> list[int | None]:
    """A spy on the backend's dumps (count_dumps) after its first round, a full one, and the
    rounds until one is skipped: links brought up a moment ago still get the kernel's own
    notes (carrier, operstate, IPv6 autoconf) for a second or so, each making the next round
    a full one. Then a ping from h's container to peer's (ARP and bridge learning are no
    change) and one more round, skipped."""
    dumps = count_dumps(backend)
    assert backend.reconcile(peers) == 0 and len(dumps) == 1  # the first round is a full one
    deadline = time.monotonic() + 10
    while True:
        before = len(dumps)
        assert backend.reconcile(peers) == 0
        if len(dumps) == before:
            break
        assert time.monotonic() < deadline, "the kernel kept notifying changes for 10 s"
        time.sleep(0.2)
    assert h.ping_from_container(peer.container_ip)
    rounds = len(dumps)
    assert backend.reconcile(peers) == 0 and len(dumps) == rounds
    return dumps


@dataclass
class Plane:
    link: Any | None  # the device's link message, None if absent
    routes: dict[str, tuple[str | None, str | None, bool]] = field(default_factory=dict)  # dst -> (via, dev, onlink)
    foreign_routes: set[str] = field(default_factory=set)
    neighbours: dict[str, str] = field(default_factory=dict)  # permanent, on the device
    fdb: set[tuple[str, str]] = field(default_factory=set)  # (mac, dst), on the device
    addresses: list[str] = field(default_factory=list)  # on the device

    def vxlan(self, name: str) -> Any:
        return self.link.get(("IFLA_LINKINFO", "IFLA_INFO_DATA")).get(name)


def plane(ns: str, device: str = "flannel.1") -> Plane:
    with IPRoute(netns=ns, flags=0) as ipr:
        names = {link["index"]: link.get("ifname") for link in ipr.get_links()}
        found = ipr.link_lookup(ifname=device)
        index = found[0] if found else None
        result = Plane(ipr.get_links(index)[0] if index else None)
        for r in ipr.route("dump", family=2):
            if r.get("table") != 254:
                continue
            dst = f"{r.get('dst') or '0.0.0.0'}/{r['dst_len']}"
            if r["proto"] == RTPROT:
                result.routes[dst] = (r.get("gateway"), names.get(r.get("oif")), bool(r["flags"] & 4))
            else:
                result.foreign_routes.add(dst)
        if index:
            result.neighbours = {n.get("dst"): n.get("lladdr") for n in ipr.neigh("dump", family=2)
                                 if n["ifindex"] == index and n["state"] & 0x80}
            result.fdb = {(f.get("lladdr"), f.get("dst")) for f in ipr.fdb("dump")
                          if f["ifindex"] == index and f.get("dst")}
            result.addresses = [f"{a.get('address')}/{a['prefixlen']}" for a in ipr.get_addr(family=2, index=index)]
        return result


def ip(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """An operator's `ip`/`bridge` command in a lab namespace (to cause drift)."""
    tool = "bridge" if argv[0] == "fdb" else "ip"
    return netns.run_argv([tool, "-n", ns, *argv], check=check, timeout=30)


@contextmanager
def netlink_changes(ns: str, needles: tuple[str, ...] = ("flannel", f"proto {RTPROT}")):
    """Collect `ip monitor` lines mentioning our objects while the block runs (not the
    kernel's own link-local addresses and routes, which arrive when it pleases)."""
    with tempfile.NamedTemporaryFile("w+", prefix="oflb-mon-") as out:
        proc = subprocess.Popen(["ip", "-n", ns, "monitor", "all"], stdout=out, stderr=subprocess.STDOUT)
        lines: list[str] = []
        try:
            time.sleep(0.2)  # let it subscribe
            yield lines
            time.sleep(0.3)  # let late events arrive
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        out.seek(0)
        # fe80:: lines are the kernel's IPv6 autoconf on a device that came up a moment ago
        lines.extend(line.rstrip() for line in out if any(n in line for n in needles) and "fe80::" not in line)
