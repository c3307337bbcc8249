"""The machine lab: systemd-nspawn machines with docker, plus etcd, all in namespaces.

    python -m lab.machine_lab up [--machines 3] [--etcd-members 3] [--release bookworm|trixie|bookworm,trixie]
                                 [--insecure]
    python -m lab.machine_lab ping-matrix
    python -m lab.machine_lab etcdctl get --prefix /coreos.com/network
    python -m lab.machine_lab stop-etcd N / start-etcd N
    python -m lab.machine_lab status
    python -m lab.machine_lab down

Layout (namespace prefix ``oflm-`` by default, so it never clashes with the light lab):

* ``oflm-underlay``: a bridge ``br0``; every other namespace has an ``eth0`` veth whose
  peer ``v-<node>`` is a port of it. Underlay 192.168.81.0/24.
* ``oflm-etcd<i>``: etcd member *i* (Debian ``/usr/bin/etcd``) at 192.168.81.(1+i),
  data under ``<state dir>/etcd/etcd<i>``. Secured by default: clients only over https
  with a client certificate (``--client-cert-auth``; CA, server and client certificates in
  ``<state dir>/pki``), peers over https (``--peer-auto-tls``), and etcd auth (``root``,
  a role ``flannel`` with readwrite on the prefix only, a user ``flannel``; passwords in
  ``<state dir>/secrets/*.password``, mode 0600). ``up --insecure``: plain http, no auth.
* ``oflm-m<i>``: machine ``m<i>`` (``lab.machines.Machine``, booted from the cached
  rootfs of its Debian release: ``--release``, one for all machines or a comma list the
  machines take in turn, e.g. ``bookworm,trixie`` for a mixed cluster) at
  192.168.81.(10+i), default route on eth0 (no gateway: nothing leaves the underlay).
  The busybox image ``ofl-busybox`` is imported into its docker.
* the inventory (default ``lab/inventory.yml``), group ``flannel_hosts``, reached with
  ``ProxyCommand ip netns exec oflm-m<i> nc 127.0.0.1 22``. It carries the controller
  paths of the CA, client certificate and key (``flannel_etcd_{ca,cert,key}_src``: the
  role copies them to each machine) and ``flannel_etcd_username``/``flannel_etcd_password``,
  the password as a ``lookup('file', ...)`` of its 0600 file, never inline.

Nothing is added to the root namespace (all ``ip`` commands run with ``-n <ns>``, the
veths are created directly inside lab namespaces). Processes are stopped by recorded
PID (checked against their start time). ``down`` removes everything, also after a
failed or interrupted ``up`` (the state file is written before each step).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from . import busybox_image, etcd, etcd_security, netns, procs, rootfs, underlay
from .machines import Machine, MachineError
from .state import LabError, StateStore

REPO = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = Path(os.environ.get("OFL_MACHINE_LAB_STATE", REPO / "lab" / ".machines"))
DEFAULT_INVENTORY = Path(os.environ.get("OFL_MACHINE_LAB_INVENTORY", REPO / "lab" / "inventory.yml"))
DEFAULT_PREFIX = os.environ.get("OFL_MACHINE_LAB_PREFIX", "oflm-")
DEFAULT_RELEASES = os.environ.get("OFL_MACHINE_LAB_RELEASE", rootfs.DEFAULT_RELEASE)
SUBNET = "192.168.81.0/24"
INVENTORY_MARK = "# overlaynet.flannel machine lab"


def parse_releases(releases: Sequence[str] | str) -> list[str]:
    """Release names from a comma list or a sequence, each one known (a clear error names
    the known ones)."""
    names = [n.strip() for n in (releases.split(",") if isinstance(releases, str) else releases) if n.strip()]
    if not names:
        raise LabError(f"no Debian release given; known: {', '.join(rootfs.RELEASES)}")
    for name in names:
        if name not in rootfs.RELEASES:
            raise LabError(f"unknown Debian release {name!r} for the lab machines; known: {', '.join(rootfs.RELEASES)}")
    return names


def cannot_run(*extra_tools: str) -> str | None:
    """Why the machine lab cannot run here (a test's skip reason), or None: it needs root
    and these tools, plus any *extra_tools* a test uses."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, systemd-nspawn)"
    for tool in ("systemd-nspawn", "etcd", "etcdctl", "nc", "ip", *extra_tools):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    return None


def log(msg: str) -> None:
    print(f"[machine-lab] {msg}", file=sys.stderr, flush=True)


class MachineLab:
    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR, inventory: Path = DEFAULT_INVENTORY,
                 prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix.endswith("-") or len(prefix) > 8 or not prefix[:-1].isalnum():
            raise LabError(f"bad prefix {prefix!r}: use a few letters/digits and a dash, e.g. oflm-")
        self.state_dir = Path(os.path.abspath(state_dir))
        self.inventory = Path(os.path.abspath(inventory))
        self.prefix = prefix
        self.store = StateStore(self.state_dir)
        self.state_file = self.store.path
        self.state: dict[str, Any] = self.store.load() or {}

    # -------------------------------------------------------------------- helpers

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with self.store.locked():
            yield

    def save(self) -> None:
        self.store.save(self.state)

    @property
    def underlay(self) -> str:
        return f"{self.prefix}underlay"

    def address(self, offset: int) -> str:
        return str(ipaddress.ip_network(SUBNET).network_address + offset)

    def attach(self, ns: str, node: str, address: str, default_route: bool) -> None:
        plen = ipaddress.ip_network(SUBNET).prefixlen
        underlay.plug(self.underlay, ns, f"v-{node}", f"{address}/{plen}", default_route=default_route)

    def add_ns(self, ns: str) -> None:
        self.state.setdefault("namespaces", [])
        if ns not in self.state["namespaces"]:
            self.state["namespaces"].append(ns)
        self.save()  # recorded before it exists: down removes it after a crash
        netns.add(ns, tag=None)  # untagged: a machine shares it, its lo is the machine's own

    def etcd_cluster(self) -> etcd.Cluster:
        """The lab's etcd members as recorded in the state (process records, TLS and auth)."""
        security = self.state.get("security")
        tls = etcd_security.tls_of(security)
        members = [etcd.Member(m["name"], m["address"], Path(m["data_dir"]), Path(m["log"]), m["ns"],
                               loopback_client=True, record=m.get("process"), tls=tls, peer_tls=tls is not None)
                   for m in self.state.get("etcd") or []]
        if not members:
            raise LabError("no machine lab is up (no etcd members in the state)")
        cluster = etcd.Cluster(members, token=f"oflm-{self.state['lab_id']}")
        auth = etcd_security.auth_of(security)
        if auth is not None:
            cluster.remember_auth(auth)
        return cluster

    def endpoints(self) -> list[str]:
        return self.etcd_cluster().endpoints if self.state.get("etcd") else []

    def machine_name(self, i: int) -> str:
        """m<i> for the default prefix, else <prefix>m<i>: machine names stay unique per box."""
        return f"m{i}" if self.prefix == "oflm-" else f"{self.prefix}m{i}"

    def machine(self, name: str) -> Machine:
        return Machine.load(self.state_dir / "machines", name)

    # ------------------------------------------------------------------------- up

    def up(self, machines: int = 3, etcd_members: int = 3, timeout: float = 120, secure: bool = True,
           releases: Sequence[str] | str = DEFAULT_RELEASES) -> None:
        """*releases*: the Debian release of every machine, or several (a sequence or a comma
        list) that machine 1, 2, ... take in turn."""
        names = parse_releases(releases)
        with self.lock():
            if self.state.get("namespaces") or netns.with_prefix(self.prefix):
                raise LabError(f"a machine lab with prefix {self.prefix} exists already "
                               f"(state {self.state_file}); run `python -m lab.machine_lab down` first")
            t0 = time.monotonic()
            try:
                self._up(machines, etcd_members, timeout, secure, names)
            except BaseException:
                log("up failed; removing what was created")
                with contextlib.suppress(Exception):
                    self._down()
                raise
            log(f"lab up in {time.monotonic() - t0:.1f} s; inventory {self.inventory}")

    def _up(self, n_machines: int, n_etcd: int, timeout: float, secure: bool, releases: Sequence[str]) -> None:
        if n_etcd not in (1, 3, 5):
            raise LabError("--etcd-members must be 1, 3 or 5")
        if not 0 <= n_machines <= 20:
            raise LabError("--machines must be between 0 (etcd only) and 20")
        wanted = [releases[i % len(releases)] for i in range(n_machines)]
        caches = {name: rootfs.ensure_rootfs(release=name) for name in dict.fromkeys(wanted)}
        tarball = busybox_image.ensure_tarball() if n_machines else None
        self.state = {"prefix": self.prefix, "lab_id": secrets.token_hex(3), "namespaces": [],
                      "etcd": [], "machines": [], "inventory": str(self.inventory)}
        self.save()
        key, pub = self._client_key()
        self._build_underlay()
        self.state["security"] = etcd_security.plan(
            self.state_dir, [self.address(1 + i) for i in range(1, n_etcd + 1)], tls=secure, auth=secure)
        self.save()
        self._start_etcd(n_etcd)
        boxes = self._boot_machines([(name, caches[name]) for name in wanted], pub)  # they boot in parallel
        self.etcd_cluster().wait_healthy(timeout=30)
        self._enable_auth()
        self._wait_machines(boxes, timeout)
        for m in boxes:
            busybox_image.import_into(m, tarball=tarball, timeout=timeout)
        self.write_inventory(key)

    def _enable_auth(self) -> None:
        """Users, the prefix-only role and ``auth enable`` on the running etcd (secured lab)."""
        auth = etcd_security.pending_auth(self.state.get("security"))
        if auth is None:
            return
        self.etcd_cluster().set_up_auth(auth)
        self.state["security"]["auth"]["enabled"] = True
        self.save()

    def _client_key(self) -> tuple[Path, str]:
        """The lab's ssh key (made once per state dir) and its public half."""
        key = self.state_dir / "id_ed25519"
        if not key.exists():
            proc = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "overlaynet-machine-lab",
                                   "-f", str(key)], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise LabError(f"ssh-keygen failed: {proc.stderr.strip()}")
        return key, (self.state_dir / "id_ed25519.pub").read_text()

    def _build_underlay(self) -> None:
        self.add_ns(self.underlay)
        underlay.make_switch(self.underlay)

    def _start_etcd(self, n_etcd: int) -> None:
        """Namespaces, underlay links and processes of the etcd members (not waited for)."""
        members: list[dict[str, Any]] = []
        for i in range(1, n_etcd + 1):
            name, ns, address = f"etcd{i}", f"{self.prefix}etcd{i}", self.address(1 + i)
            spec = etcd.member(name, address, self.state_dir / "etcd", ns)  # its paths only
            members.append({"name": name, "ns": ns, "address": address, "data_dir": str(spec.data_dir),
                            "log": str(spec.log)})
        self.state["etcd"] = members
        for m in members:
            self.add_ns(m["ns"])
            self.attach(m["ns"], m["name"], m["address"], default_route=False)
        cluster = self.etcd_cluster()
        for m, member in zip(members, cluster.members, strict=True):
            m["process"] = cluster.start_member(member)
            self.save()

    def _boot_machines(self, rootfses: Sequence[tuple[str, Path]], pub: str) -> list[Machine]:
        """Namespace, underlay link and boot of every machine, one per (release, its rootfs
        cache); returns once each has a PID 1."""
        mdir = self.state_dir / "machines"
        boxes: list[Machine] = []
        for i, (release, cache) in enumerate(rootfses, start=1):
            name = self.machine_name(i)
            ns = f"{self.prefix}m{i}"
            addr = self.address(10 + i)
            self.add_ns(ns)
            self.attach(ns, name, addr, default_route=True)
            self.state["machines"].append({"name": name, "ns": ns, "address": addr, "release": release})
            self.save()
            box = Machine(name, ns, cache, mdir, pub, hostname=name)
            box.boot()
            boxes.append(box)
        return boxes

    def _wait_machines(self, boxes: Sequence[Machine], timeout: float) -> None:
        for m in boxes:
            m.wait_ready(timeout=timeout)
            log(f"{m.name}: sshd after {m.boot_to_sshd or 0:.1f} s, {m.system_state} after "
                f"{m.boot_to_running or 0:.1f} s")

    def etcdctl(self, args: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.etcd_cluster().run(*args, check=check)

    # --------------------------------------------------------------- etcd faults

    def _member(self, cluster: etcd.Cluster, i: int) -> tuple[dict[str, Any], etcd.Member]:
        for rec, member in zip(self.state["etcd"], cluster.members, strict=True):
            if rec["name"] == f"etcd{i}":
                return rec, member
        raise LabError(f"no etcd member {i}: the lab has etcd1..etcd{len(self.state['etcd'])}")

    def stop_etcd(self, i: int) -> None:
        """Stop member *i* by its recorded PID (SIGTERM, then SIGKILL); its data stays."""
        with self.lock():
            rec, member = self._member(self.etcd_cluster(), i)
            member.stop()
            rec["process"] = None
            self.save()

    def start_etcd(self, i: int, timeout: float = 30.0) -> None:
        """Start member *i* again on its data (a no-op when it runs); wait until it is healthy
        (which needs a quorum of members running)."""
        with self.lock():
            cluster = self.etcd_cluster()
            rec, member = self._member(cluster, i)
            rec["process"] = cluster.start_member(member)
            self.save()
            cluster.wait_healthy(only=[member], timeout=timeout)

    def write_inventory(self, key: Path) -> None:
        hosts: dict[str, Any] = {}
        for mm in self.state["machines"]:
            m = self.machine(mm["name"])
            hv = m.ansible_host_vars(key)
            hv["ansible_host"] = f"{mm['ns']}.{self.state['lab_id']}"  # keys ssh's ControlPersist socket
            hv.update({"flannel_public_ip": mm["address"], "flannel_iface": "eth0", "lab_netns": mm["ns"]})
            hosts[mm["name"]] = hv
        data = {"all": {"children": {"flannel_hosts": {"hosts": hosts, "vars": {
            "ansible_connection": "ssh",
            "ansible_pipelining": True,
            "flannel_etcd_endpoints": self.endpoints(),
            **etcd_security.inventory_vars(self.state.get("security"), copy_files=True),
            "flannel_wheel_dir": rootfs.WHEEL_DIR,
        }}}}}
        self.inventory.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.inventory.with_name(f".{self.inventory.name}.tmp")
        tmp.write_text(f"{INVENTORY_MARK} {self.state['lab_id']} (prefix {self.prefix}, state {self.state_dir}).\n"
                       "# Written by `python -m lab.machine_lab up`; removed by `down`.\n"
                       + yaml.safe_dump(data, sort_keys=False, width=1000))
        os.replace(tmp, self.inventory)


    # ----------------------------------------------------------------------- down

    def down(self) -> None:
        with self.lock():
            self._down()

    def _down(self) -> None:
        errors = self._stop_machines()
        procs.kill_all([m["process"] for m in self.state.get("etcd", []) if m.get("process")])
        errors += self._delete_namespaces()
        for sub in ("etcd", "pki", "secrets"):
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(self.state_dir / sub)
        inv = Path(self.state.get("inventory") or self.inventory)
        with contextlib.suppress(FileNotFoundError):
            if inv.read_text().startswith(INVENTORY_MARK):
                inv.unlink()
        self.state = {}
        if errors:
            self.save()
            raise LabError("down left something behind:\n" + "\n".join(errors))
        self.store.remove()

    def _stop_machines(self) -> list[str]:
        """Halt every machine of the state or of the machines dir, in parallel; the errors."""
        errors: list[str] = []
        mdir = self.state_dir / "machines"
        names = {m["name"] for m in self.state.get("machines", [])}
        if mdir.is_dir():
            names |= {p.name for p in mdir.iterdir() if (p / "machine.json").exists()}

        def stop(name: str) -> None:
            try:
                Machine.load(mdir, name).stop()
            except MachineError as e:
                if "no machine" not in str(e):
                    errors.append(str(e))

        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:  # halts run in parallel
            list(pool.map(stop, sorted(names)))
        return errors

    def _delete_namespaces(self) -> list[str]:
        """Kill what is left in our namespaces (by PID), delete them (underlay last); the errors."""
        errors: list[str] = []
        namespaces = set(self.state.get("namespaces", [])) | set(netns.with_prefix(self.prefix))
        for ns in sorted(namespaces, key=lambda n: n.endswith("underlay")):
            if not netns.exists(ns):
                continue
            procs.kill_pids(netns.pids(ns))  # leftovers that live in our namespace, by PID
            r = netns.run_argv([netns.IP, "netns", "del", ns], check=False)
            if r.returncode != 0 or netns.exists(ns):
                errors.append(f"could not delete namespace {ns}: {r.stderr.strip()}")
        return errors

    # ---------------------------------------------------------------- ping matrix

    def ping_matrix(self, out: Any = sys.stdout) -> bool:
        machines = [self.machine(mm["name"]) for mm in self.state.get("machines", [])]
        if not machines:
            raise LabError("no machine lab is up")
        ips: dict[str, str] = {}
        for m in machines:
            m.run(["docker", "rm", "-f", "ping"], check=False)
            m.run(["docker", "run", "-d", "--name", "ping", busybox_image.IMAGE_NAME, "sleep", "3600"])
            ips[m.name] = m.run(["docker", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", "ping"]).stdout.strip()
        ok = True
        width = max(len(n) for n in ips) + 2
        colw = max(len(f"{n} {ip}") for n, ip in ips.items()) + 2
        print(" " * (width + 16) + "".join(f"{n} {ips[n]}".ljust(colw) for n in ips), file=out)
        for m in machines:
            row = f"{m.name.ljust(width)}{ips[m.name].ljust(16)}"
            for n, ip in ips.items():
                if n == m.name:
                    cell = "-"
                else:
                    r = m.run(["docker", "exec", "ping", "ping", "-c", "1", "-W", "2", ip], check=False)
                    cell = "✔" if r.returncode == 0 else "✘"
                    ok &= r.returncode == 0
                row += cell.ljust(colw)
            print(row, file=out)
        return ok

    def status(self) -> dict[str, Any]:
        return {
            "state": str(self.state_file),
            "inventory": self.state.get("inventory"),
            "namespaces": netns.with_prefix(self.prefix),
            "etcd_security": sorted(self.state.get("security") or {}) or ["plain http"],
            "etcd": [{"name": m["name"], "address": m["address"], "alive": procs.alive(m.get("process"))}
                     for m in self.state.get("etcd", [])],
            "machines": [{"name": mm["name"], "address": mm["address"], "release": mm.get("release"),
                          "running": self.machine(mm["name"]).is_running()}
                         for mm in self.state.get("machines", [])],
        }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.machine_lab", description=__doc__.split("\n")[0])
    ap.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    ap.add_argument("--inventory", type=Path, default=DEFAULT_INVENTORY)
    ap.add_argument("--prefix", default=DEFAULT_PREFIX)
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="create the underlay, etcd, machines and the inventory")
    up.add_argument("--machines", type=int, default=3)
    up.add_argument("--etcd-members", type=int, default=3)
    up.add_argument("--timeout", type=float, default=120)
    up.add_argument("--release", default=DEFAULT_RELEASES,
                    help=f"Debian release of the machines ({', '.join(rootfs.RELEASES)}), or a comma list the "
                         f"machines take in turn (default: {DEFAULT_RELEASES}; $OFL_MACHINE_LAB_RELEASE)")
    up.add_argument("--insecure", action="store_true",
                    help="etcd over plain http without auth (default: mutual TLS and etcd auth)")
    sub.add_parser("down", help="remove everything the lab created")
    sub.add_parser("ping-matrix", help="ping between busybox containers on every pair of machines")
    sub.add_parser("status", help="what is up")
    e = sub.add_parser("etcdctl", help="etcdctl against the lab's etcd (run in an etcd namespace)")
    e.add_argument("args", nargs=argparse.REMAINDER)
    for verb in ("stop", "start"):
        p = sub.add_parser(f"{verb}-etcd", help=f"{verb} etcd member N (its data is kept)")
        p.add_argument("index", type=int)
    args = ap.parse_args(argv)
    try:
        return _run(MachineLab(args.state_dir, args.inventory, args.prefix), args)
    except (LabError, MachineError, rootfs.RootfsError, busybox_image.BusyboxError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _run(lab: MachineLab, args: argparse.Namespace) -> int:
    if args.cmd == "up":
        lab.up(args.machines, args.etcd_members, args.timeout, secure=not args.insecure, releases=args.release)
        print(f"inventory: {lab.inventory}")
    elif args.cmd == "down":
        lab.down()
    elif args.cmd == "ping-matrix":
        return 0 if lab.ping_matrix() else 1
    elif args.cmd == "status":
        print(json.dumps(lab.status(), indent=2))
    elif args.cmd == "etcdctl":
        r = lab.etcdctl(args.args, check=False)
        sys.stdout.write(r.stdout)
        sys.stderr.write(r.stderr)
        return r.returncode
    elif args.cmd in ("stop-etcd", "start-etcd"):
        getattr(lab, args.cmd.replace("-", "_"))(args.index)
        print(f"etcd{args.index} {'stopped' if args.cmd == 'stop-etcd' else 'running and healthy'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
