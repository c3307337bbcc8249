"""A small lab of "hosts" (network namespaces) for the backend tests.

    oflb-<id>-ul   underlay namespace: bridge br0 (192.168.81.0/24 lives only on its ports)
    oflb-<id>-hN   host N: eth0 192.168.81.1N/24 on br0, docker0 10.5.N.1/24, ip_forward on
    oflb-<id>-cN   container N: eth0 10.5.N.2/24 in host N's docker0, default via 10.5.N.1

Everything is created inside these namespaces (`ip -n`), never in the root namespace, and
the namespaces are deleted after each test, also when it fails (fixture in conftest.py).
Also: read a host's data plane with pyroute2 dumps, and watch it for netlink changes.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import netaddr
from pyroute2 import IPRoute

from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.base import LocalHost
from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.registry import make_backend
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.config import NetworkConfig
from ansible_collections.overlaynet.flannel.plugins.module_utils.subnet.lease import Lease, LeaseAttrs
from support.namespaces import Namespaces

NETWORK = "10.5.0.0/16"
RTPROT = 70  # the protocol our routes carry (netlink.RTPROT_OVERLAYNET)
_counter = itertools.count()


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


@dataclass
class LabHost:
    n: int
    ns: str
    container_ns: str
    public_ip: str
    subnet: netaddr.IPNetwork
    iface_index: int

    @property
    def container_ip(self) -> str:
        return str(self.subnet.network + 2)

    def local_host(self) -> LocalHost:
        return LocalHost(self.public_ip, "eth0", self.iface_index, 1500, netns=self.ns)

    def lease(self, backend_type: str, backend_data: dict | None = None) -> Lease:
        return Lease(self.subnet, LeaseAttrs(self.public_ip, None, backend_type, backend_data))

    def ping_from_container(self, dst: str, tries: int = 6) -> bool:
        """True once one ping gets an answer (the first may wait for ARP)."""
        for _attempt in range(tries):
            if run("ip", "netns", "exec", self.container_ns, "ping", "-c", "1", "-W", "1", dst,
                   check=False).returncode == 0:
                return True
        return False


class Lab:
    def __init__(self) -> None:
        self.tag = f"oflb-{os.getpid()}-{next(_counter)}"
        self.namespaces = Namespaces()
        self.hosts: list[LabHost] = []

    def build(self, hosts: int) -> Lab:
        self.underlay = self._netns("ul")
        run("ip", "-n", self.underlay, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.underlay, "link", "set", "br0", "up")
        self.hosts = [self._host(i) for i in range(1, hosts + 1)]
        return self

    def _netns(self, suffix: str) -> str:
        return self.namespaces.add(f"{self.tag}-{suffix}")

    def _host(self, i: int) -> LabHost:
        ns, cns = self._netns(f"h{i}"), self._netns(f"c{i}")
        public_ip, subnet = f"192.168.81.1{i}", netaddr.IPNetwork(f"10.5.{i}.0/24")
        run("ip", "-n", self.underlay, "link", "add", f"h{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
        run("ip", "-n", self.underlay, "link", "set", f"h{i}", "master", "br0", "up")
        run("ip", "-n", ns, "addr", "add", f"{public_ip}/24", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        run("ip", "-n", ns, "link", "add", "docker0", "type", "bridge")
        run("ip", "-n", ns, "addr", "add", f"{subnet.network + 1}/24", "dev", "docker0")
        run("ip", "-n", ns, "link", "set", "docker0", "up")
        run("ip", "-n", ns, "link", "add", "vc", "type", "veth", "peer", "name", "eth0", "netns", cns)
        run("ip", "-n", ns, "link", "set", "vc", "master", "docker0", "up")
        run("ip", "-n", cns, "addr", "add", f"{subnet.network + 2}/24", "dev", "eth0")
        run("ip", "-n", cns, "link", "set", "eth0", "up")
        run("ip", "-n", cns, "route", "add", "default", "via", str(subnet.network + 1))
        return LabHost(i, ns, cns, public_ip, subnet, _ifindex(ns, "eth0"))

    def close(self) -> None:
        self.namespaces.delete_all()


def _ifindex(ns: str, name: str) -> int:
    out = run("ip", "-n", ns, "-o", "link", "show", "dev", name).stdout
    return int(out.split(":", 1)[0])


def config(backend: dict) -> NetworkConfig:
    return NetworkConfig.from_dict({"Network": NETWORK, "Backend": backend})


def start(lab: Any, backend: dict) -> tuple[dict[int, Any], dict[int, Lease]]:
    """setup + activate on every host, then add every other host's lease: (backends, leases)."""
    cfg = config(backend)
    backends, leases = {}, {}
    for h in lab.hosts:
        backends[h.n] = make_backend(cfg, h.local_host())
        done = backends[h.n].setup(cfg, h.local_host())
        backends[h.n].activate(h.subnet)
        leases[h.n] = h.lease(done.backend_type, done.backend_data)
    for h in lab.hosts:
        for other in lab.hosts:
            if other is not h:
                backends[h.n].add_peer(leases[other.n])
    return backends, leases


def peers_of(h: Any, leases: dict[int, Lease]) -> dict[str, Lease]:
    """Every lease but h's own, keyed as the agent keys peers."""
    return {lease.key: lease for n, lease in leases.items() if n != h.n}


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
    return subprocess.run([tool, "-n", ns, *argv], check=check, capture_output=True, text=True, timeout=30)


@contextmanager
def netlink_changes(ns: str, needles: tuple[str, ...] = ("flannel", f"proto {RTPROT}")):
    """Collect `ip monitor` lines mentioning our objects while the block runs."""
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
        lines.extend(line.rstrip() for line in out if any(n in line for n in needles))
