"""The ``Lab`` class: build, extend, inspect and tear down a light-host lab.

Typical use in a pytest fixture::

    from lab import Lab

    with Lab.up(hosts=3, etcd_members=1, state_dir=tmp, prefix="ofla-") as lab:
        lab.etcd_endpoints          # ['http://192.168.81.2:2379']
        lab.host_ns("h1")           # 'ofla-h1'
        lab.host_run_dir("h1")      # <tmp>/hosts/h1/run  == /run inside h1
        lab.run("h1", ["ip", "-br", "addr"])
        lab.add_container("h1", "c1")
    # leaving the block always runs lab.down()

Everything the lab creates is a namespace whose name starts with the lab's prefix, a
process inside one of those namespaces, or a file under the state directory. ``down``
removes all three kinds, including what a crashed run left behind (found by prefix).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypedDict, Unpack

from . import containers, etcd, etcd_security, inventory, light_hosts, netns, procs, underlay
from .state import (
    DEFAULT_PREFIX,
    DEFAULT_STATE_DIR,
    DEFAULT_SUBNET,
    LabError,
    StateStore,
    default_python,
    new_state,
    resolve_paths,
)

HOST_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
CONTAINER_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
RESERVED = re.compile(r"^(underlay|etcd[0-9]*)$")
HOST_OFFSET = 10  # host i has underlay address <network> + 10 + i
SECOND_SUBNET = "192.168.82.0/24"  # the default network of add_nic
NIC_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")
ETCD_OFFSET = 1  # etcd member i has <network> + 1 + i
NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"
FAIL_POINTS = ("start", "underlay", "etcd", "hosts", "ready")


class UpOptions(TypedDict, total=False):
    """More keyword arguments of :meth:`Lab.up`."""

    fail_at: str | None  # inject a failure at one of FAIL_POINTS (tests of the clean-up)
    secure: Sequence[str]  # "tls" and/or "auth" for the lab's etcd


class Lab:
    """A lab of light hosts and etcd members, identified by its state directory.

    ``Lab(state_dir=None, prefix=None, inventory=None, python=None)`` attaches to the lab
    of *state_dir* (default ``lab/.state`` or ``$OFL_LAB_STATE``), whether or not one is
    up; use :meth:`up` to build one. *prefix* (default ``ofl-`` or ``$OFL_LAB_PREFIX``)
    starts every namespace name; two labs that run at the same time need different
    prefixes (and state dirs). *inventory* defaults to ``lab/inventory.yml`` for the
    default state dir, else ``<state dir>/inventory.yml`` (or ``$OFL_LAB_INVENTORY``).
    *python* is the ``ansible_python_interpreter`` written to the inventory (default
    ``<repo>/.venv/bin/python`` or ``$OFL_LAB_PYTHON``).
    """

    def __init__(self, state_dir: str | os.PathLike[str] | None = None,
                 prefix: str | None = None, inventory: str | os.PathLike[str] | None = None,
                 python: str | None = None) -> None:
        self.state_dir, self.inventory_path, self.prefix = resolve_paths(
            state_dir, inventory, prefix)
        self.python = python or default_python()
        self.store = StateStore(self.state_dir)
        try:
            self.state: dict[str, Any] | None = self.store.load()
        except LabError:
            self.state = None  # unreadable state file: `down` still cleans up by prefix
        if self.state is not None:
            explicit = prefix or os.environ.get("OFL_LAB_PREFIX")
            if explicit and explicit != self.state["prefix"]:
                raise LabError(
                    f"the lab in {self.state_dir} uses prefix {self.state['prefix']!r}, "
                    f"not {explicit!r}")
            self.prefix = self.state["prefix"]
            self.inventory_path = Path(self.state["inventory"])
            self.python = self.state["python"]

    # ------------------------------------------------------------------ building

    @classmethod
    def up(cls, hosts: int = 2, etcd_members: int = 1, subnet: str = DEFAULT_SUBNET, *,
           state_dir: str | os.PathLike[str] | None = None, prefix: str | None = None,
           inventory: str | os.PathLike[str] | None = None, python: str | None = None,
           **options: Unpack[UpOptions]) -> Lab:
        """Build a lab: underlay, *etcd_members* (1 or 3) etcd members, *hosts* light
        hosts ``h1..hN``, the inventory; return the :class:`Lab`.

        *secure* may hold ``"tls"``: etcd serves clients only over https and only to clients
        with a certificate of the lab's CA (peers over https too), and ``"auth"``: etcd auth
        with a ``root`` user and a ``flannel`` user whose role may only read and write the
        prefix. Both as the machine lab does it (:mod:`lab.etcd_security`); the inventory
        carries them.

        Refuses when a lab is already up in the state dir, or when namespaces with the
        prefix exist. On any failure (or Ctrl-C) everything built so far is removed
        before the exception propagates. *fail_at* (or ``$OFL_LAB_FAIL_AT``) injects a
        failure at one of :data:`FAIL_POINTS`, for tests of that clean-up.
        """
        lab = cls(state_dir=state_dir, prefix=prefix, inventory=inventory, python=python)
        lab._up(hosts, etcd_members, subnet, options.get("fail_at") or os.environ.get("OFL_LAB_FAIL_AT"),
                options.get("secure", ()))
        return lab

    def _up(self, n_hosts: int, n_etcd: int, subnet: str, fail_at: str | None,
            secure: Sequence[str] = ()) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, mounts); run it as root")
        if n_etcd not in (1, 3):
            raise LabError(f"--etcd-members must be 1 or 3, not {n_etcd}")
        if n_hosts < 0:
            raise LabError(f"--hosts must be 0 or more, not {n_hosts}")
        self._check_options(fail_at, secure)
        try:
            net = ipaddress.IPv4Network(subnet)
        except ValueError as exc:
            raise LabError(f"--subnet {subnet!r} is not an IPv4 network such as "
                           f"192.168.81.0/24 ({exc})") from exc
        if HOST_OFFSET + n_hosts >= net.num_addresses - 1:
            raise LabError(f"--subnet {subnet} is too small for {n_hosts} hosts; "
                           f"use a larger one (hosts start at offset {HOST_OFFSET + 1})")
        with self.store.locked():
            existing = self.store.load()
            if existing is not None:
                what = ("is already up" if existing.get("status") == "up"
                        else "was left half-built by a failed run")
                raise LabError(
                    f"a lab {what} (state {self.store.path}, prefix "
                    f"{existing.get('prefix')!r}); run `{self._cli('down')}` first")
            left = self._prefixed_netns()
            if left:
                ours = self._prefixed_netns(lab_only=True)
                hint = (f"left by a crashed lab run, or another lab uses the prefix; run "
                        f"`{self._cli('down')}`, or pick another --prefix" if ours else
                        "not made by the lab, so `down` leaves them alone; pick another "
                        "--prefix")
                raise LabError(f"network namespaces with prefix {self.prefix!r} exist: "
                               f"{', '.join(left)} ({hint})")
            self.state = new_state(self.prefix, str(net), self.state_dir,
                                   self.inventory_path, self.python, secrets.token_hex(3))
            self._save()
            try:
                self._secure(n_etcd, "tls" in secure, "auth" in secure)
                self._build(n_hosts, n_etcd, fail_at)
            except BaseException:
                self._teardown()
                raise

    @staticmethod
    def _check_options(fail_at: str | None, secure: Sequence[str]) -> None:
        if fail_at is not None and fail_at not in FAIL_POINTS:
            raise LabError(f"unknown failure point {fail_at!r}; one of {FAIL_POINTS}")
        unknown = sorted(set(secure) - {"tls", "auth"})
        if unknown:
            raise LabError(f"unknown etcd security {unknown}: tls and/or auth")

    def _checkpoint(self, point: str, fail_at: str | None) -> None:
        if fail_at == point:
            raise LabError(f"injected failure at {point!r} (fail_at / OFL_LAB_FAIL_AT)")

    def _build(self, n_hosts: int, n_etcd: int, fail_at: str | None) -> None:
        st = self._st
        self._checkpoint("start", fail_at)
        key_job = None
        key, authorized = light_hosts.client_key_paths(self.state_dir)
        if not key.exists() or not authorized.exists():
            key_job = light_hosts.keygen(key, "overlaynet-flannel-lab")

        uns = underlay.underlay_ns(self.prefix)
        self._record_ns(uns)
        underlay.create(self.prefix, self._ns_tag)
        st["underlay"] = {"netns": uns, "bridge": underlay.BRIDGE}
        self._save()
        self._checkpoint("underlay", fail_at)

        self._start_etcd(n_etcd)
        self._checkpoint("etcd", fail_at)

        if key_job is not None:
            light_hosts.wait_keygen([key_job])
            shutil.copyfile(key.with_name(key.name + ".pub"), authorized)
            os.chmod(key, 0o600)
        names = [f"h{i}" for i in range(1, n_hosts + 1)]
        for i, name in enumerate(names, 1):
            self._create_host(name, i)
        self._start_hosts(names)
        self._checkpoint("hosts", fail_at)

        light_hosts.wait_ready({n: st["hosts"][n] for n in names}, st["processes"])
        self._etcd().wait_healthy()
        self._enable_auth()
        self._checkpoint("ready", fail_at)
        self._write_inventory()
        st["status"] = "up"
        self._save()

    def _start_etcd(self, n_etcd: int) -> None:
        """Namespaces, underlay links and processes of the etcd members (not waited for)."""
        st = self._st
        for i in range(1, n_etcd + 1):
            name = f"etcd{i}"
            st["etcd"].append({
                "index": i, "name": name, "netns": f"{self.prefix}{name}",
                "address": underlay.node_address(st["subnet"], ETCD_OFFSET + i),
                "data_dir": str(self.state_dir / "etcd" / name / "data"),
                "log": str(self.state_dir / "etcd" / name / "etcd.log"),
            })
        for m in st["etcd"]:
            self._record_ns(m["netns"])
            netns.add(m["netns"], self._ns_tag)
            underlay.attach(self.prefix, m["netns"], m["name"], m["address"], st["subnet"])
        cluster = self._etcd()
        for member in cluster.members:
            st["processes"][f"etcd:{member.name}"] = cluster.start_member(member)
            self._save()

    def _secure(self, n_etcd: int, tls: bool, auth: bool) -> None:
        """The PKI and the password files of a secured lab, recorded before etcd starts."""
        addresses = [underlay.node_address(self._st["subnet"], ETCD_OFFSET + i) for i in range(1, n_etcd + 1)]
        self._st["security"] = etcd_security.plan(self.state_dir, addresses, tls=tls, auth=auth)
        self._save()

    def _enable_auth(self) -> None:
        """Users, the prefix-only role and ``auth enable`` on the running etcd (``--auth``)."""
        pending = etcd_security.pending_auth(self._st.get("security"))
        if pending is not None:
            self._etcd().set_up_auth(pending)
            self._st["security"]["auth"]["enabled"] = True
            self._save()

    def _etcd(self) -> etcd.Cluster:
        """The lab's etcd members as recorded in the state (process records, TLS and auth)."""
        st = self._st
        tls = etcd_security.tls_of(st.get("security"))
        members = [etcd.Member(m["name"], m["address"], Path(m["data_dir"]), Path(m["log"]), m["netns"],
                               loopback_client=True, record=st["processes"].get(f"etcd:{m['name']}"),
                               tls=tls, peer_tls=tls is not None)
                   for m in st["etcd"]]
        cluster = etcd.Cluster(members, token=f"{self.prefix}{st['lab_id']}")
        auth = etcd_security.auth_of(st.get("security"))
        if auth is not None:
            cluster.remember_auth(auth)
        return cluster

    def _create_host(self, name: str, index: int) -> None:
        """Namespace, underlay link and files of host *name* (not started yet)."""
        st = self._st
        ns = f"{self.prefix}{name}"
        hostdir = self.state_dir / "hosts" / name
        address = underlay.node_address(st["subnet"], HOST_OFFSET + index)
        st["hosts"][name] = {"index": index, "netns": ns, "address": address,
                             "dir": str(hostdir), "run_dir": str(hostdir / "run")}
        self._record_ns(ns)
        netns.add(ns, self._ns_tag)
        underlay.attach(self.prefix, ns, name, address, st["subnet"], default_route=True)
        _, authorized = light_hosts.client_key_paths(self.state_dir)
        etc_names = {m["name"]: m["address"] for m in st["etcd"]}
        job = light_hosts.prepare(hostdir, name, address, etc_names, authorized)
        self._keygen_jobs.append(job)

    @property
    def _keygen_jobs(self) -> list[subprocess.Popen[bytes]]:
        if not hasattr(self, "_jobs"):
            self._jobs: list[subprocess.Popen[bytes]] = []
        return self._jobs

    def _start_hosts(self, names: Sequence[str]) -> None:
        jobs, self._jobs = self._keygen_jobs, []
        light_hosts.wait_keygen(jobs)
        st = self._st
        for name in names:
            host = st["hosts"][name]
            st["processes"][f"host:{name}"] = light_hosts.start(
                host["netns"], name, Path(host["dir"]))
            self._save()

    # ------------------------------------------------------------------ tearing down

    def down(self) -> None:
        """Remove the lab: kill its processes (by PID), delete its namespaces (from the
        state file and every namespace with the prefix), its files and its inventory.
        Safe to call when nothing is up, and after a failed or crashed ``up``."""
        with self.store.locked():
            self._teardown()

    def _teardown(self) -> None:
        for job in self._keygen_jobs:  # of a build that failed half-way
            job.wait()
        self._jobs = []
        try:
            state = self.store.load() or self.state
        except LabError:  # unreadable state file: clean up by prefix
            state = self.state
        records = list((state or {}).get("processes", {}).values())
        # SIGKILL at once: nothing is kept (etcd data goes too), and `unshare --fork`
        # blocks SIGTERM while it waits for its child.
        procs.kill_all(records, first=signal.SIGKILL)
        prefix = (state or {}).get("prefix", self.prefix)
        # only names with the lab's prefix, even if the state file says otherwise
        spaces = [ns for ns in (state or {}).get("namespaces", []) if ns.startswith(prefix)]
        spaces += [ns for ns in self._prefixed_netns(prefix, lab_only=True) if ns not in spaces]
        strays: list[int] = []
        for ns in spaces:
            strays += netns.pids(ns)
        procs.kill_pids(sorted(set(strays)), first=signal.SIGKILL)
        for ns in reversed(spaces):  # containers, hosts, etcd, then the underlay
            netns.delete(ns)
        for sub in ("hosts", "etcd", "ssh", "pki", "secrets"):
            shutil.rmtree(self.state_dir / sub, ignore_errors=True)
        inv = Path(state["inventory"]) if state else self.inventory_path
        inventory.remove(inv)
        self.store.remove()
        self.state = None

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.down()

    # ------------------------------------------------------------------ hosts

    def add_host(self, name: str | None = None) -> str:
        """Join one more light host to the running lab; return its name (default: the
        next free ``h<i>``). Its underlay address is ``<subnet> + 10 + i`` where *i* is
        the lowest free host index. The inventory is rewritten."""
        with self._mutating():
            st = self._st
            used = {h["index"] for h in st["hosts"].values()}
            index = 1
            while index in used or (name is None and f"h{index}" in st["hosts"]):
                index += 1
            if name is None:
                name = f"h{index}"
            self._check_new_name(name, HOST_RE, "host")
            try:
                self._create_host(name, index)
                self._start_hosts([name])
                light_hosts.wait_ready({name: st["hosts"][name]}, st["processes"])
                self._write_inventory()
                self._save()
            except BaseException:
                self._remove_host(name)
                raise
            return name

    def add_nic(self, host: str, iface: str = "eth1", subnet: str = SECOND_SUBNET) -> str:
        """Give host *host* another NIC *iface* on a further underlay network *subnet* (its
        own switch, namespace ``<prefix>net<N>``, made on first use); its address is
        ``<subnet> + 10 + i`` as on eth0. For the underlay choice (``--iface``,
        ``--iface-regex``, ``--iface-can-reach``); the default route stays on eth0. Returns
        the address."""
        with self._mutating():
            st = self._st
            hrec = self._host(host)
            try:
                net = ipaddress.IPv4Network(subnet)
            except ValueError as exc:
                raise LabError(f"--subnet {subnet!r} is not an IPv4 network such as {SECOND_SUBNET}") from exc
            if not NIC_RE.match(iface) or netns.link_exists(hrec["netns"], iface):
                raise LabError(f"bad or taken interface name {iface!r} on {host}: use e.g. eth1 (eth0 is the underlay)")
            networks = st.setdefault("networks", {})
            if str(net) not in networks:
                if net.overlaps(ipaddress.IPv4Network(st["subnet"])):
                    raise LabError(f"--subnet {net} overlaps the lab's underlay {st['subnet']}")
                ns = f"{self.prefix}net{len(networks) + 1}"
                self._record_ns(ns)
                netns.add(ns, self._ns_tag)
                underlay.make_switch(ns)
                networks[str(net)] = ns
            address = underlay.node_address(str(net), HOST_OFFSET + hrec["index"])
            underlay.plug_nic(networks[str(net)], hrec["netns"], iface, f"n{hrec['index']}-{iface}"[:15],
                              f"{address}/{net.prefixlen}")
            hrec.setdefault("nics", {})[iface] = {"address": address, "subnet": str(net)}
            self._save()
            return address

    def remove_host(self, name: str) -> None:
        """Remove host *name* (its containers, processes, namespace, files); rewrite the
        inventory."""
        with self._mutating():
            self._host(name)
            self._remove_host(name)
            self._write_inventory()

    def _remove_host(self, name: str) -> None:
        st = self._st
        for cname, c in list(st["containers"].items()):
            if c["host"] == name:
                self._remove_container(cname)
        ns = f"{self.prefix}{name}"
        keys = [k for k in (f"host:{name}", f"hostinit:{name}") if k in st["processes"]]
        procs.kill_all([st["processes"][k] for k in keys], first=signal.SIGKILL)
        for k in keys:
            del st["processes"][k]
        if ns in st["namespaces"]:  # only a namespace this lab recorded (and made)
            procs.kill_pids(netns.pids(ns), first=signal.SIGKILL)
            underlay.detach(self.prefix, name)
            netns.delete(ns)
            st["namespaces"].remove(ns)
        host = st["hosts"].pop(name, None)
        if host:
            shutil.rmtree(host["dir"], ignore_errors=True)
        self._save()

    # ------------------------------------------------------------------ containers

    def add_container(self, host: str, name: str, address: str | None = None,
                      bridge_address: bool = False) -> dict[str, Any]:
        """Add container *name* on *host*: namespace ``<prefix><host>-<name>``, ``eth0``
        bridged to the host's ``docker0`` (created, without address, if absent).

        *address* (CIDR) defaults to the next free address of ``FLANNEL_SUBNET`` from
        the host's ``/run/flannel/subnet.env`` (``host_run_dir(host)/flannel/subnet.env``);
        the default route goes via the ``FLANNEL_SUBNET`` address, the MTU is
        ``FLANNEL_MTU``. With *bridge_address* the lab also puts that gateway address on
        ``docker0`` if it lacks it (normally the docker bridge module does this).
        Returns ``{"name", "host", "netns", "address", "gateway", "mtu"}``.
        """
        with self._mutating():
            st = self._st
            hrec = self._host(host)
            self._check_new_name(name, CONTAINER_RE, "container")
            ns = f"{self.prefix}{host}-{name}"
            if netns.exists(ns):
                raise LabError(f"network namespace {ns} already exists (not this lab's)")
            used = {c["address"].split("/")[0] for c in st["containers"].values()
                    if c["host"] == host}
            subnet_env = Path(hrec["run_dir"]) / "flannel" / "subnet.env"
            spec = containers.plan(subnet_env, address, used)
            bridge_cidr = None
            if bridge_address:
                plen = ipaddress.ip_interface(spec["address"]).network.prefixlen
                bridge_cidr = f"{spec['gateway']}/{plen}"
            rec = {"name": name, "host": host, "netns": ns, **spec}
            st["containers"][name] = rec
            self._record_ns(ns)
            try:
                containers.create(hrec["netns"], ns, name, spec, bridge_cidr, self._ns_tag)
            except BaseException:
                self._remove_container(name)
                raise
            self._save()
            return dict(rec)

    def remove_container(self, name: str) -> None:
        """Remove container *name* (its processes, namespace and veth)."""
        with self._mutating():
            if name not in self._st["containers"]:
                raise LabError(f"no container {name!r} in the lab; containers: "
                               f"{', '.join(self._st['containers']) or 'none'}")
            self._remove_container(name)

    def _remove_container(self, name: str) -> None:
        st = self._st
        c = st["containers"].pop(name)
        if c["netns"] in st["namespaces"]:  # only a namespace this lab recorded (and made)
            procs.kill_pids(netns.pids(c["netns"]), first=signal.SIGKILL)
            hns = f"{self.prefix}{c['host']}"
            if netns.exists(hns):
                netns.ip(hns, "link", "del", containers.host_veth(name), check=False)
            netns.delete(c["netns"])
            st["namespaces"].remove(c["netns"])
        self._save()

    # ------------------------------------------------------------------ etcd

    def stop_etcd(self, i: int = 1) -> None:
        """Stop etcd member *i* (SIGTERM by PID, wait); its data directory stays."""
        with self._mutating():
            m = self._member(i)
            rec = self._st["processes"].pop(f"etcd:{m['name']}", None)
            if rec:
                procs.kill_all([rec])
            self._save()

    def start_etcd(self, i: int = 1, wait: bool = True, timeout: float = 30.0) -> None:
        """(Re)start etcd member *i* with its existing data; with *wait*, until it
        answers ``endpoint health`` (needs a quorum of members running)."""
        with self._mutating():
            name = self._member(i)["name"]
            cluster = self._etcd()
            member = next(m for m in cluster.members if m.name == name)
            self._st["processes"][f"etcd:{name}"] = cluster.start_member(member)
            self._save()
            if wait:
                cluster.wait_healthy(only=[member], timeout=timeout)

    def etcd_running(self, i: int = 1) -> bool:
        """True when etcd member *i*'s process is running."""
        return procs.alive(self._st["processes"].get(f"etcd:etcd{i}"))

    def etcdctl(self, *args: str, check: bool = True) -> str:
        """Run ``etcdctl --endpoints <all members> args...`` (API v3) inside the first
        etcd member's namespace; return its stdout."""
        return self._etcd().run(*args, check=check).stdout

    # ------------------------------------------------------------------ running things

    def exec_argv(self, target: str, argv: Sequence[str] = (), netns_only: bool = False,
                  cwd: str | None = None) -> list[str]:
        """The argv that runs *argv* on *target* (a host, container or ``etcd<i>``).

        On a host it enters the host's network, mount, UTS and PID namespaces (as an SSH
        login would: ``/run`` is the host's run dir, the hostname is the host's, and
        the process dies with the host); with *netns_only*, and for containers and etcd
        members, it is ``ip netns exec <ns> argv...`` (network namespace only).
        """
        st = self._st
        if target in st["hosts"]:
            init = st["processes"].get(f"hostinit:{target}")
            if not netns_only:
                if not procs.alive(init):
                    raise LabError(f"host {target} is not running (its init process is "
                                   f"gone); see {st['hosts'][target]['dir']}/host.log")
                wd = cwd or os.getcwd()
                wd_opt = [] if wd == "/run" or wd.startswith("/run/") else [f"--wd={wd}"]
                return [NSENTER, f"--target={init['pid']}", "--mount", "--uts", "--net",
                        "--pid", *wd_opt, *argv]
            return netns.exec_argv(st["hosts"][target]["netns"], argv)
        if target in st["containers"]:
            return netns.exec_argv(st["containers"][target]["netns"], argv)
        for m in st["etcd"]:
            if target == m["name"]:
                return netns.exec_argv(m["netns"], argv)
        raise LabError(f"no host, container or etcd member {target!r} in the lab "
                       f"(hosts: {', '.join(self.hosts) or 'none'})")

    def run(self, target: str, argv: Sequence[str], netns_only: bool = False,
            check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """``subprocess.run`` of *argv* on *target* (see :meth:`exec_argv`); extra keyword
        arguments go to ``subprocess.run`` (e.g. ``capture_output=True, text=True``)."""
        full = self.exec_argv(target, argv, netns_only, kwargs.get("cwd"))
        return subprocess.run(full, check=check, **kwargs)

    def popen(self, target: str, argv: Sequence[str], netns_only: bool = False,
              **kwargs: Any) -> subprocess.Popen[Any]:
        """``subprocess.Popen`` of *argv* on *target* (see :meth:`exec_argv`), e.g. an
        agent on a host. On a host (not *netns_only*) the process lives in the host's PID
        namespace, so it dies with the host at the latest; the caller should still stop
        and ``wait()`` it."""
        full = self.exec_argv(target, argv, netns_only, kwargs.get("cwd"))
        return subprocess.Popen(full, **kwargs)

    # ------------------------------------------------------------------ inspection

    @property
    def is_up(self) -> bool:
        """True when the state file says the lab is up."""
        return self.state is not None and self.state.get("status") == "up"

    def refresh(self) -> Lab:
        """Re-read the state file (after another process changed the lab)."""
        self.state = self.store.load()
        return self

    @property
    def hosts(self) -> list[str]:
        """Host names, by index."""
        hs = self._st["hosts"]
        return sorted(hs, key=lambda n: hs[n]["index"])

    @property
    def etcd_endpoints(self) -> list[str]:
        """``http(s)://<underlay IP>:2379`` of every member (reachable from lab namespaces
        only, never from the root namespace)."""
        return self._etcd().endpoints

    @property
    def etcd_security(self) -> dict[str, Any]:
        """The state record of the etcd's TLS and auth (paths, never passwords; ``{}``:
        plain); see :mod:`lab.etcd_security`."""
        return dict(self._st.get("security") or {})

    @property
    def etcd_tls(self) -> etcd.Tls | None:
        return etcd_security.tls_of(self._st.get("security"))

    @property
    def etcd_auth(self) -> etcd.Auth | None:
        return etcd_security.auth_of(self._st.get("security"))

    @property
    def subnet(self) -> str:
        return str(self._st["subnet"])

    @property
    def lab_id(self) -> str:
        return str(self._st["lab_id"])

    @property
    def ssh_key(self) -> Path:
        """Private key that logs in as root on every host."""
        return light_hosts.client_key_paths(self.state_dir)[0]

    def host_ns(self, name: str) -> str:
        """Network namespace of host *name*."""
        return str(self._host(name)["netns"])

    def host_address(self, name: str) -> str:
        """Underlay address (flannel_public_ip) of host *name*, without prefix length."""
        return str(self._host(name)["address"])

    def host_run_dir(self, name: str) -> Path:
        """Directory that host *name* sees as ``/run`` (its subnet.env is
        ``host_run_dir(name) / "flannel" / "subnet.env"``)."""
        return Path(self._host(name)["run_dir"])

    def host_dir(self, name: str) -> Path:
        """Host *name*'s directory under the state dir (config, keys, host.log)."""
        return Path(self._host(name)["dir"])

    def host_pid(self, name: str) -> int:
        """Root-namespace PID of host *name*'s init (PID 1 of its PID namespace)."""
        rec = self._st["processes"].get(f"hostinit:{name}")
        self._host(name)
        if not rec:
            raise LabError(f"host {name} has no init process recorded")
        return int(rec["pid"])

    def container(self, name: str) -> dict[str, Any]:
        """Record of container *name*: name, host, netns, address, gateway, mtu."""
        try:
            return dict(self._st["containers"][name])
        except KeyError:
            raise LabError(f"no container {name!r} in the lab") from None

    def container_ns(self, name: str) -> str:
        return str(self.container(name)["netns"])

    def etcd_ns(self, i: int = 1) -> str:
        return str(self._member(i)["netns"])

    def status(self) -> dict[str, Any]:
        """A summary: hosts (address, running, sshd listening), etcd members (running),
        containers, inventory path."""
        if self.state is None:
            return {"up": False, "state_dir": str(self.state_dir), "prefix": self.prefix,
                    "leftover_namespaces": self._prefixed_netns()}
        st = self._st
        hosts = {}
        for name in self.hosts:
            h = st["hosts"][name]
            rec = st["processes"].get(f"host:{name}")
            running = procs.alive(rec)
            hosts[name] = {"netns": h["netns"], "address": h["address"],
                           "running": running,
                           "sshd": running and light_hosts.sshd_listening(rec["pid"]),
                           "run_dir": h["run_dir"]}
        members = {m.name: {"netns": m.netns, "endpoint": m.client_url, "running": m.running()}
                   for m in self._etcd().members}
        return {"up": st["status"] == "up", "status": st["status"], "lab_id": st["lab_id"],
                "prefix": st["prefix"], "subnet": st["subnet"],
                "state_dir": str(self.state_dir), "inventory": st["inventory"],
                "hosts": hosts, "etcd": members, "containers": dict(st["containers"])}

    # ------------------------------------------------------------------ internals

    @property
    def _st(self) -> dict[str, Any]:
        if self.state is None:
            raise LabError(f"no lab is up (no state in {self.state_dir}); "
                           f"run `{self._cli('up --hosts N')}` first")
        return self.state

    @contextlib.contextmanager
    def _mutating(self) -> Iterator[None]:
        with self.store.locked():
            self.state = self.store.load()
            st = self._st
            if st.get("status") != "up":
                raise LabError(f"the lab in {self.state_dir} is not up (status "
                               f"{st.get('status')!r}); run `{self._cli('down')}`")
            yield

    def _cli(self, command: str) -> str:
        """The command line that runs *command* on this lab (for error messages)."""
        opts = ""
        if self.state_dir != DEFAULT_STATE_DIR:
            opts += f" --state-dir {self.state_dir}"
        if self.prefix != DEFAULT_PREFIX:
            opts += f" --prefix {self.prefix}"
        return f"python3 -m lab{opts} {command}"

    def _save(self) -> None:
        if self.state is not None:
            self.store.save(self.state)

    @property
    def _ns_tag(self) -> str:
        """Alias of ``lo`` in every namespace of this lab (see :func:`netns.add`)."""
        return f"{netns.LAB_TAG} {self._st['lab_id']} {self.state_dir}"

    def _record_ns(self, ns: str) -> None:
        """Record *ns* in the state file before it is created (crash safety)."""
        if netns.exists(ns):
            raise LabError(f"network namespace {ns} already exists (not this lab's); "
                           f"pick another name or --prefix")
        if ns not in self._st["namespaces"]:
            self._st["namespaces"].append(ns)
        self._save()

    def _prefixed_netns(self, prefix: str | None = None, lab_only: bool = False) -> list[str]:
        """Namespaces whose name starts with the prefix; with *lab_only*, only those the
        lab created (tagged, see :func:`netns.add`) - never someone else's."""
        prefix = prefix or self.prefix
        found = [ns for ns in netns.list_netns() if ns.startswith(prefix)]
        return [ns for ns in found if netns.is_lab_netns(ns)] if lab_only else found

    def _host(self, name: str) -> dict[str, Any]:
        try:
            return self._st["hosts"][name]
        except KeyError:
            raise LabError(f"no host {name!r} in the lab; hosts: "
                           f"{', '.join(self.hosts) or 'none'}") from None

    def _member(self, i: int) -> dict[str, Any]:
        for m in self._st["etcd"]:
            if m["index"] == i:
                return m
        raise LabError(f"no etcd member {i}; the lab has {len(self._st['etcd'])}")

    def _check_new_name(self, name: str, pattern: re.Pattern[str], kind: str) -> None:
        if not pattern.match(name) or RESERVED.match(name):
            raise LabError(f"bad {kind} name {name!r}: use a lower-case letter then up to "
                           f"11 letters/digits (not 'underlay' or 'etcd<N>')")
        st = self._st
        if name in st["hosts"] or name in st["containers"]:
            raise LabError(f"the lab already has a host or container named {name!r}")
        if kind == "host" and netns.exists(f"{self.prefix}{name}"):
            raise LabError(f"namespace {self.prefix}{name} already exists; run down")

    def _write_inventory(self) -> None:
        inventory.write(self.inventory_path, self._st, self.etcd_endpoints, self.ssh_key,
                        etcd_security.inventory_vars(self._st.get("security"), copy_files=False))

