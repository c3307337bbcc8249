"""A small lab of "hosts" (network namespaces) for the backend tests.

    oflb-<id>-ul   underlay namespace: bridge br0 (192.168.81.0/24 lives only on its ports)
    oflb-<id>-hN   host N: eth0 192.168.81.1N/24 on br0, docker0 10.5.N.1/24, ip_forward on
    oflb-<id>-cN   container N: eth0 10.5.N.2/24 in host N's docker0, default via 10.5.N.1

Everything is created inside these namespaces (`ip -n`), never in the root namespace, and
the namespaces are deleted after each test, also when it fails.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from dataclasses import dataclass

import netaddr
import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils.backends.base import LocalHost
from ansible_collections.overlaynet.flannel.plugins.module_utils.lease import Lease, LeaseAttrs
from ansible_collections.overlaynet.flannel.plugins.module_utils.netconfig import NetworkConfig

NETWORK = "10.5.0.0/16"
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
        for _ in range(tries):
            if run("ip", "netns", "exec", self.container_ns, "ping", "-c", "1", "-W", "1", dst,
                   check=False).returncode == 0:
                return True
        return False


class Lab:
    def __init__(self) -> None:
        self.tag = f"oflb-{os.getpid()}-{next(_counter)}"
        self.namespaces: list[str] = []
        self.hosts: list[LabHost] = []

    def build(self, hosts: int) -> "Lab":
        self.underlay = self._netns("ul")
        run("ip", "-n", self.underlay, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.underlay, "link", "set", "br0", "up")
        self.hosts = [self._host(i) for i in range(1, hosts + 1)]
        return self

    def _netns(self, suffix: str) -> str:
        name = f"{self.tag}-{suffix}"
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")
        return name

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
        for name in reversed(self.namespaces):
            run("ip", "netns", "del", name, check=False)


def _ifindex(ns: str, name: str) -> int:
    out = run("ip", "-n", ns, "-o", "link", "show", "dev", name).stdout
    return int(out.split(":", 1)[0])


def config(backend: dict) -> NetworkConfig:
    return NetworkConfig.from_dict({"Network": NETWORK, "Backend": backend})


@pytest.fixture
def lab():
    """Three hosts (h1..h3) with a container each; deleted afterwards, even on failure."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    built = Lab()
    try:
        yield built.build(3)
    finally:
        built.close()
