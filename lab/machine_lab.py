"""The machine lab: systemd-nspawn machines with docker, plus etcd, all in namespaces.

    python -m lab.machine_lab up [--machines 3] [--etcd-members 3]
    python -m lab.machine_lab ping-matrix
    python -m lab.machine_lab etcdctl get --prefix /coreos.com/network
    python -m lab.machine_lab status
    python -m lab.machine_lab down

Layout (namespace prefix ``oflm-`` by default, so it never clashes with the light lab):

* ``oflm-underlay``: a bridge ``br0``; every other namespace has an ``eth0`` veth whose
  peer ``v-<node>`` is a port of it. Underlay 192.168.81.0/24.
* ``oflm-etcd<i>``: etcd member *i* (Debian ``/usr/bin/etcd``) at 192.168.81.(1+i),
  data under ``<state dir>/etcd/etcd<i>``.
* ``oflm-m<i>``: machine ``m<i>`` (``lab.machines.Machine``, booted from the cached
  rootfs) at 192.168.81.(10+i), default route on eth0 (no gateway: nothing leaves the
  underlay). The busybox image ``ofl-busybox`` is imported into its docker.
* the inventory (default ``lab/inventory.yml``), group ``flannel_hosts``, reached with
  ``ProxyCommand ip netns exec oflm-m<i> nc 127.0.0.1 22``.

Nothing is added to the root namespace (all ``ip`` commands run with ``-n <ns>``, the
veths are created directly inside lab namespaces). Processes are stopped by recorded
PID (checked against their start time). ``down`` removes everything, also after a
failed or interrupted ``up`` (the state file is written before each step).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from . import busybox_image, rootfs
from .machines import Machine, MachineError, _alive, _starttime

REPO = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = Path(os.environ.get("OFL_MACHINE_LAB_STATE", REPO / "lab" / ".machines"))
DEFAULT_INVENTORY = Path(os.environ.get("OFL_MACHINE_LAB_INVENTORY", REPO / "lab" / "inventory.yml"))
DEFAULT_PREFIX = os.environ.get("OFL_MACHINE_LAB_PREFIX", "oflm-")
SUBNET = "192.168.81.0/24"
IP = shutil.which("ip") or "/usr/sbin/ip"
ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
INVENTORY_MARK = "# overlaynet.flannel machine lab"


class LabError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[machine-lab] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------- namespaces


def _run(argv: Sequence[str], check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), capture_output=True, text=True, input=input, env=CLEAN_ENV)
    if check and r.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed ({r.returncode}): {(r.stderr or r.stdout).strip()}")
    return r


def ns_ip(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if not ns:
        raise LabError("internal error: ip without a namespace")
    return _run([IP, "-n", ns, *args], check=check)


def ns_exists(ns: str) -> bool:
    return Path("/run/netns", ns).exists()


def ns_list(prefix: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir("/run/netns") if n.startswith(prefix))
    except FileNotFoundError:
        return []


def ns_pids(ns: str) -> list[int]:
    r = _run([IP, "netns", "pids", ns], check=False)
    return [int(p) for p in r.stdout.split() if p.isdigit()]


def kill_pid(pid: int, start: int | None, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, one PID that still has the recorded start time."""
    if not pid or pid <= 1 or pid == os.getpid() or not _alive(pid, start):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid, start) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if _alive(pid, start):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _alive(pid, start) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)


# ---------------------------------------------------------------------------- state


class MachineLab:
    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR, inventory: Path = DEFAULT_INVENTORY,
                 prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix.endswith("-") or len(prefix) > 8 or not prefix[:-1].isalnum():
            raise LabError(f"bad prefix {prefix!r}: use a few letters/digits and a dash, e.g. oflm-")
        self.state_dir = Path(os.path.abspath(state_dir))
        self.inventory = Path(os.path.abspath(inventory))
        self.prefix = prefix
        self.state_file = self.state_dir / "state.json"
        self.state: dict[str, Any] = {}
        if self.state_file.exists():
            self.state = json.loads(self.state_file.read_text())

    # -------------------------------------------------------------------- helpers

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2) + "\n")
        os.replace(tmp, self.state_file)

    @property
    def underlay(self) -> str:
        return f"{self.prefix}underlay"

    def address(self, offset: int) -> str:
        return str(ipaddress.ip_network(SUBNET).network_address + offset)

    def attach(self, ns: str, node: str, address: str, default_route: bool) -> None:
        plen = ipaddress.ip_network(SUBNET).prefixlen
        port = f"v-{node}"
        ns_ip(ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", self.underlay)
        for args in (["link", "set", "lo", "up"], ["addr", "add", f"{address}/{plen}", "dev", "eth0"],
                     ["link", "set", "eth0", "up"]):
            ns_ip(ns, *args)
        if default_route:
            ns_ip(ns, "route", "add", "default", "dev", "eth0")
        ns_ip(self.underlay, "link", "set", port, "master", "br0")
        ns_ip(self.underlay, "link", "set", port, "up")

    def add_ns(self, ns: str) -> None:
        self.state.setdefault("namespaces", [])
        if ns not in self.state["namespaces"]:
            self.state["namespaces"].append(ns)
        self.save()  # recorded before it exists: down removes it after a crash
        _run([IP, "netns", "add", ns])

    def endpoints(self) -> list[str]:
        return [f"http://{m['address']}:2379" for m in self.state.get("etcd", [])]

    def machine_name(self, i: int) -> str:
        """m<i> for the default prefix, else <prefix>m<i>: machine names stay unique per box."""
        return f"m{i}" if self.prefix == "oflm-" else f"{self.prefix}m{i}"

    def machine(self, name: str) -> Machine:
        return Machine.load(self.state_dir / "machines", name)

    # ------------------------------------------------------------------------- up

    def up(self, machines: int = 3, etcd_members: int = 3, timeout: float = 120) -> None:
        with self.lock():
            if self.state.get("namespaces") or ns_list(self.prefix):
                raise LabError(f"a machine lab with prefix {self.prefix} exists already "
                               f"(state {self.state_file}); run `python -m lab.machine_lab down` first")
            t0 = time.monotonic()
            try:
                self._up(machines, etcd_members, timeout)
            except BaseException:
                log("up failed; removing what was created")
                with contextlib.suppress(Exception):
                    self._down()
                raise
            log(f"lab up in {time.monotonic() - t0:.1f} s; inventory {self.inventory}")

    def _up(self, n_machines: int, n_etcd: int, timeout: float) -> None:
        if n_etcd not in (1, 3, 5):
            raise LabError("--etcd-members must be 1, 3 or 5")
        if not 1 <= n_machines <= 20:
            raise LabError("--machines must be between 1 and 20")
        cache = rootfs.ensure_rootfs()
        tarball = busybox_image.ensure_tarball()
        self.state = {"prefix": self.prefix, "lab_id": secrets.token_hex(3), "namespaces": [],
                      "etcd": [], "machines": [], "inventory": str(self.inventory)}
        self.save()
        # keys
        key = self.state_dir / "id_ed25519"
        if not key.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "overlaynet-machine-lab", "-f", str(key)])
        pub = (self.state_dir / "id_ed25519.pub").read_text()
        # underlay
        self.add_ns(self.underlay)
        ns_ip(self.underlay, "link", "set", "lo", "up")
        ns_ip(self.underlay, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")
        ns_ip(self.underlay, "link", "set", "br0", "up")
        # etcd
        members = [{"name": f"etcd{i}", "ns": f"{self.prefix}etcd{i}", "address": self.address(1 + i),
                    "data_dir": str(self.state_dir / "etcd" / f"etcd{i}"),
                    "log": str(self.state_dir / "etcd" / f"etcd{i}.log")} for i in range(1, n_etcd + 1)]
        cluster = ",".join(f"{m['name']}=http://{m['address']}:2380" for m in members)
        token = f"oflm-{self.state['lab_id']}"
        for m in members:
            self.add_ns(m["ns"])
            self.attach(m["ns"], m["name"], m["address"], default_route=False)
        for m in members:
            Path(m["data_dir"]).parent.mkdir(parents=True, exist_ok=True)
            argv = [IP, "netns", "exec", m["ns"], ETCD, "--name", m["name"], "--data-dir", m["data_dir"],
                    "--listen-client-urls", f"http://{m['address']}:2379,http://127.0.0.1:2379",
                    "--advertise-client-urls", f"http://{m['address']}:2379",
                    "--listen-peer-urls", f"http://{m['address']}:2380",
                    "--initial-advertise-peer-urls", f"http://{m['address']}:2380",
                    "--initial-cluster", cluster, "--initial-cluster-state", "new",
                    "--initial-cluster-token", token, "--logger", "zap", "--log-outputs", "stderr"]
            with open(m["log"], "ab") as out:
                p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     env=CLEAN_ENV, start_new_session=True, close_fds=True)
            m["pid"], m["start"] = p.pid, _starttime(p.pid)
            self.state["etcd"].append(m)
            self.save()
        # machines: boot all, then wait (they boot in parallel)
        mdir = self.state_dir / "machines"
        boxes: list[Machine] = []
        for i in range(1, n_machines + 1):
            name = self.machine_name(i)
            ns = f"{self.prefix}m{i}"
            addr = self.address(10 + i)
            self.add_ns(ns)
            self.attach(ns, name, addr, default_route=True)
            self.state["machines"].append({"name": name, "ns": ns, "address": addr})
            self.save()
            m = Machine(name, ns, cache, mdir, pub, hostname=name)
            m.boot()
            boxes.append(m)
        self._wait_etcd(timeout=30)
        for m in boxes:
            m.wait_ready(timeout=timeout)
            log(f"{m.name}: sshd after {m.boot_to_sshd:.1f} s, {m.system_state} after {m.boot_to_running:.1f} s")
        for m in boxes:
            busybox_image.import_into(m, tarball=tarball, timeout=timeout)
        self.write_inventory(key)

    def _wait_etcd(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        members = self.state["etcd"]
        while True:
            for m in members:
                if not _alive(m["pid"], m["start"]):
                    tail = Path(m["log"]).read_text(errors="replace").splitlines()[-15:]
                    raise LabError(f"etcd member {m['name']} exited:\n" + "\n".join(tail))
            r = self.etcdctl(["endpoint", "health"], check=False)
            if r.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise LabError(f"etcd not healthy after {timeout:.0f} s: {r.stdout}{r.stderr}")
            time.sleep(0.1)

    def etcdctl(self, args: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        members = self.state.get("etcd") or []
        if not members:
            raise LabError("no machine lab is up (no etcd members in the state)")
        env = dict(CLEAN_ENV, ETCDCTL_API="3")
        argv = [IP, "netns", "exec", members[0]["ns"], ETCDCTL, "--endpoints", ",".join(self.endpoints()),
                "--dial-timeout", "2s", "--command-timeout", "5s", *args]
        r = subprocess.run(argv, capture_output=True, text=True, env=env)
        if check and r.returncode != 0:
            raise LabError(f"etcdctl {' '.join(args)} failed: {r.stderr.strip()}")
        return r

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
        for m in self.state.get("etcd", []):
            kill_pid(m.get("pid"), m.get("start"))
        namespaces = set(self.state.get("namespaces", [])) | set(ns_list(self.prefix))
        for ns in sorted(namespaces, key=lambda n: n.endswith("underlay")):  # underlay last
            if not ns_exists(ns):
                continue
            for pid in ns_pids(ns):  # leftovers that live in our namespace, by PID
                kill_pid(pid, _starttime(pid))
            r = _run([IP, "netns", "del", ns], check=False)
            if r.returncode != 0 or ns_exists(ns):
                errors.append(f"could not delete namespace {ns}: {r.stderr.strip()}")
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.state_dir / "etcd")
        inv = Path(self.state.get("inventory") or self.inventory)
        with contextlib.suppress(FileNotFoundError):
            if inv.read_text().startswith(INVENTORY_MARK):
                inv.unlink()
        self.state = {}
        if errors:
            self.save()
            raise LabError("down left something behind:\n" + "\n".join(errors))
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()

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
            "namespaces": ns_list(self.prefix),
            "etcd": [{"name": m["name"], "address": m["address"], "alive": _alive(m["pid"], m["start"])}
                     for m in self.state.get("etcd", [])],
            "machines": [{"name": mm["name"], "address": mm["address"],
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
    sub.add_parser("down", help="remove everything the lab created")
    sub.add_parser("ping-matrix", help="ping between busybox containers on every pair of machines")
    sub.add_parser("status", help="what is up")
    e = sub.add_parser("etcdctl", help="etcdctl against the lab's etcd (run in an etcd namespace)")
    e.add_argument("args", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    try:
        lab = MachineLab(args.state_dir, args.inventory, args.prefix)
        if args.cmd == "up":
            lab.up(args.machines, args.etcd_members, args.timeout)
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
    except (LabError, MachineError, rootfs.RootfsError, busybox_image.BusyboxError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
