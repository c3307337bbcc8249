"""A rig: the namespaces, etcd and processes one test (or benchmark) builds for itself.

Unlike the light lab (``core.Lab``, a state file, hosts with sshd) a rig lives in memory
and goes with :meth:`Rig.close`, also after a failure. What it builds, from the same
pieces as the light lab (``underlay``, ``containers``, ``etcd``)::

    <prefix>ul         the underlay switch: bridge br0 (with an address, if asked, so the
                       switch namespace is a node too, e.g. the one running etcd)
    <prefix><node>     a node: eth0 on br0 at <subnet> + offset
    <prefix>h<i>       a docker host (docker_hosts): node at <subnet> + 10 + i, IPv4
                       forwarding on, docker0 <overlay>.<i>.1/24
    <prefix>c<i>       its container: eth0 <overlay>.<i>.2/24 on docker0, default via .1
    <prefix><network>  a further underlay network (add_network): its own bridge br0; a
                       node's second NIC (nic) plugs into it

Nothing is added to the root namespace. Processes started through :meth:`Rig.popen` are
stopped by PID, machines registered in :attr:`Rig.machines` are stopped, and the
namespaces are deleted last first.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import netaddr

from . import containers, netns, underlay
from .etcd import Cluster

if TYPE_CHECKING:
    from .machines import Machine

SUBNET = "192.168.81.0/24"
HOST_OFFSET = 10  # docker host i is <subnet> + 10 + i


@dataclass(frozen=True)
class Host:
    """A docker host of a rig and its one container."""

    n: int
    ns: str
    container_ns: str
    public_ip: str  # on the underlay
    subnet: netaddr.IPNetwork  # docker0's network; docker0 is its first address
    iface_index: int  # of eth0

    @property
    def gateway(self) -> str:
        return str(self.subnet.network + 1)

    @property
    def container_ip(self) -> str:
        return str(self.subnet.network + 2)

    def ping_from_container(self, dst: str, tries: int = 6) -> bool:
        """True once one ping gets an answer (the first may wait for ARP)."""
        return any(netns.ping(self.container_ns, dst) for _attempt in range(tries))


class Rig:
    """The rig of namespace prefix *prefix* (underlay *subnet*, MTU *mtu*; *tag*: the alias
    of every namespace's ``lo``, None for none - a machine's namespace stays untouched)."""

    def __init__(self, prefix: str, subnet: str = SUBNET, mtu: int = underlay.MTU,
                 tag: str | None = netns.LAB_TAG) -> None:
        self.prefix = prefix
        self.subnet = ipaddress.IPv4Network(subnet)
        self.mtu = mtu
        self.namespaces = netns.Namespaces(tag)
        self.hosts: list[Host] = []
        self.machines: dict[str, Machine] = {}
        self.etcd: Cluster | None = None
        self.procs: list[subprocess.Popen[Any]] = []
        self._cleanups: list[Callable[[], object]] = []
        self._tmp: Path | None = None
        self._ports = 0
        self._networks: dict[str, ipaddress.IPv4Network] = {}

    # --- building ------------------------------------------------------------------------

    def ns(self, name: str) -> str:
        return f"{self.prefix}{name}"

    @property
    def switch(self) -> str:
        return self.ns("ul")

    @property
    def tmp(self) -> Path:
        """A directory of the rig's own, removed by :meth:`close`."""
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix=f"{self.prefix.rstrip('-')}-"))
        return self._tmp

    def address(self, offset: int) -> str:
        return str(self.subnet.network_address + offset)

    def namespace(self, name: str, lo_up: bool = True) -> str:
        """A bare namespace ``<prefix><name>`` of the rig."""
        return self.namespaces.add(self.ns(name), lo_up=lo_up)

    def build_switch(self, offset: int | None = None) -> str:
        """The underlay switch; with *offset* its bridge has that address of the subnet."""
        ns = self.namespace("ul")
        cidr = f"{self.address(offset)}/{self.subnet.prefixlen}" if offset is not None else None
        underlay.make_switch(ns, cidr, self.mtu)
        return ns

    def node(self, name: str, offset: int, port: str | None = None) -> str:
        """Namespace ``<prefix><name>`` with eth0 on the switch at ``<subnet> + offset``."""
        ns = self.namespace(name)
        self._ports += 1
        underlay.plug(self.switch, ns, port or f"p{self._ports}", f"{self.address(offset)}/{self.subnet.prefixlen}",
                      self.mtu)
        return ns

    def add_network(self, name: str, subnet: str) -> str:
        """A further underlay network: switch namespace ``<prefix><name>``, bridge br0 with no
        address, for the second NICs of nodes (:meth:`nic`)."""
        ns = self.namespace(name)
        underlay.make_switch(ns, None, self.mtu)
        self._networks[name] = ipaddress.IPv4Network(subnet)
        return ns

    def nic(self, node_ns: str, iface: str, network: str, offset: int) -> str:
        """NIC *iface* of node *node_ns* on *network* (see :meth:`add_network`) at
        ``<its subnet> + offset``; returns that address."""
        subnet = self._networks[network]
        address = str(subnet.network_address + offset)
        self._ports += 1
        underlay.plug_nic(self.ns(network), node_ns, iface, f"p{self._ports}", f"{address}/{subnet.prefixlen}",
                          self.mtu)
        return address

    def docker_host(self, i: int, overlay: str = "10.5.0.0/16", container_mtu: int = 1500) -> Host:
        """Host ``h<i>`` with docker0 ``<overlay>.<i>.1/24`` and container ``c<i>`` on it."""
        ns = self.node(f"h{i}", HOST_OFFSET + i, port=f"h{i}")
        netns.set_forwarding(ns)
        subnet = netaddr.IPNetwork(f"{netaddr.IPNetwork(overlay).network + (i << 8)}/24")
        host = Host(i, ns, self.ns(f"c{i}"), self.address(HOST_OFFSET + i), subnet, netns.ifindex(ns, "eth0"))
        containers.ensure_bridge(ns, f"{host.gateway}/24")
        self.namespace(f"c{i}")
        containers.plug(ns, host.container_ns, "vc", f"{host.container_ip}/24", host.gateway, container_mtu)
        self.hosts.append(host)
        return host

    def docker_hosts(self, count: int, overlay: str = "10.5.0.0/16", container_mtu: int = 1500) -> list[Host]:
        """The switch and hosts ``h1..h<count>`` (see :meth:`docker_host`)."""
        self.build_switch()
        return [self.docker_host(i, overlay, container_mtu) for i in range(1, count + 1)]

    def start_etcd(self, addresses: Sequence[str], names: Sequence[str] | None = None,
                   ns: str | None = None, tls_mode: str = "plain") -> Cluster:
        """etcd members inside *ns* (default: the switch), one per address (which must be
        there), plain or (*tls_mode* ``tls``/``mtls``) over TLS; stopped by :meth:`close`. The
        first cluster started is :attr:`etcd`."""
        cluster = Cluster.in_netns(ns or self.switch, addresses, names, tls_mode=tls_mode)
        self.defer(cluster.close)  # before start: a failed start is cleaned up too
        if self.etcd is None:
            self.etcd = cluster
        return cluster.start()

    # --- processes -----------------------------------------------------------------------

    def run(self, ns: str, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """*argv* inside namespace *ns*, output captured as text."""
        return netns.run(ns, argv, check=check, timeout=timeout)

    def popen(self, ns: str, *argv: str, **kwargs: Any) -> subprocess.Popen[Any]:
        """A process inside *ns* (``ip netns exec`` execs, so its PID is the program's),
        killed by :meth:`close` if it still runs."""
        proc = subprocess.Popen(netns.exec_argv(ns, argv), **kwargs)
        self.procs.append(proc)
        return proc

    def defer(self, cleanup: Callable[[], object]) -> None:
        """Call *cleanup* on :meth:`close` (last deferred first, before the processes are
        killed and the namespaces deleted)."""
        self._cleanups.append(cleanup)

    # --- tearing down --------------------------------------------------------------------

    def close(self) -> None:
        """Stop machines, deferred clean-ups, processes (by PID); delete the namespaces and
        the temporary directory. Errors of machines that would not stop are raised last."""
        errors = self._stop_machines()
        for cleanup in reversed(self._cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        self._cleanups.clear()
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()  # by its PID
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        self.procs.clear()
        self.namespaces.delete_all()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        if errors:
            raise RuntimeError("; ".join(errors))

    def _stop_machines(self) -> list[str]:
        errors = []
        for m in self.machines.values():
            try:
                m.stop()
            except Exception as e:  # noqa: BLE001 - keep cleaning up
                errors.append(f"{m.name}: {e}")
        self.machines.clear()
        return errors

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
