#!/usr/bin/env python3
"""Overlay benchmark: throughput of every backend next to its reference, and convergence.

Not a test: it prints figures, all measured in this one run, on the light lab (network
namespaces; nothing is routed from the root namespace). Run it as root, alone (the boxes
have 2 cores; anything else running skews every figure), from the checkout:

    .venv/bin/python bench/overlay_bench.py [--only throughput|convergence] [--seconds 5] [--runs 3]

Throughput (iperf3 TCP, container on h1 -> container on h2, -t <seconds>, <runs> runs each,
median and every run reported), one fresh 2-host lab per group:

  vxlan lab    rounds of: vxlan (the real agents); the same flannel.1 with the agents stopped
               by SIGTERM (info: the path without the agents' CPU); a hand-made kernel VXLAN of the
               same structure as flannel's: agents stopped with SIGTERM (which leaves the
               data plane), flannel.1 deleted on both hosts, a vxlan device created with
               `ip` (same VNI, port, MTU, MAC, local address, learning off), the lease
               network /32 on it, a permanent neighbour, an FDB entry and an onlink route
               per peer. Between rounds the hand-made device is deleted and the agents are
               started again (they recreate flannel.1). --sequential: all vxlan runs first.
  host-gw lab  the underlay veth (host to host on the underlay addresses)  alternated with
               host-gw (the real agents); then, agents stopped (info): host-gw, host ->
               container and container -> host (the cost of one container hop).
  udp lab      udp fast path (GSO super-packets between our agents), then udp per-packet
               (flannel's format; both agents restarted with --udp-fast-path=false, when
               the agent has that flag).

Convergence (3 hosts running the agent, vxlan): a writer process inside the etcd
namespace creates a fake lease (PublicIP in the underlay subnet, vxlan BackendData, TTL
lease) and stamps time.time() right before the put; a watcher per host
(`ip -4 monitor route`, lines stamped on receipt) sees the route appear. The latency of
a join is the time until the route is present on every host; p50/p99 (nearest rank) over
<joins> joins, after one warm-up join that is not counted. The fake leases are deleted
afterwards (their removal latency is reported as information).

Targets: vxlan >= 95 % of the hand-made VXLAN; host-gw >= 90 % of the underlay; udp fast
path >= 2.5 Gbit/s; udp per-packet >= 0.5 Gbit/s; convergence p99 < 250 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration" / "overlay"))

from overlay_lab import AGENT, PREFIX, OverlayLab, wait_for  # noqa: E402

from lab import Lab  # noqa: E402

IPERF_PORT = 5201
HAND_DEV = "vxhand.1"  # the hand-made kernel VXLAN (agents stopped, flannel.1 deleted)
VXLAN_PORT = 8472
VNI = 1
NETWORK = "10.5.0.0/16"
TARGETS = {
    "vxlan_ratio": 0.95,
    "hostgw_ratio": 0.90,
    "udp_fast_gbit": 2.5,
    "udp_plain_gbit": 0.5,
    "convergence_p99_ms": 250.0,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


# ---------------------------------------------------------------------------- the lab


class Bench:
    """Shared state of one benchmark run: options, work dir, notes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="oflbn-bench-"))
        self.logs = self.workdir / "logs"
        self.logs.mkdir()
        self.notes: list[str] = []
        self.failed = False

    def note(self, text: str) -> None:
        log(f"NOTE: {text}")
        self.notes.append(text)

    @contextlib.contextmanager
    def lab(self, hosts: int, name: str) -> Iterator[Lab]:
        log(f"{name}: lab up ({hosts} hosts, prefix {self.args.prefix})")
        lab = Lab.up(hosts=hosts, etcd_members=1, state_dir=self.workdir / f"lab-{name}",
                     prefix=self.args.prefix)
        try:
            yield lab
        finally:
            log(f"{name}: lab down")
            lab.down()

    def overlay(self, lab: Lab, backend: dict[str, Any], name: str) -> OverlayLab:
        logs = self.logs / name
        logs.mkdir(exist_ok=True)
        return OverlayLab(lab, backend, logs)


def agent_has_flag(flag: str) -> bool:
    """Whether bin/flannel-agent knows *flag* (argparse only; nothing is touched)."""
    out = subprocess.run([sys.executable, str(AGENT), "--help"], capture_output=True, text=True,
                         timeout=60, check=False)
    return f"--{flag}" in out.stdout


def start_agents(ov: OverlayLab, hosts: list[str], *extra: str) -> None:
    for host in hosts:
        ov.start_agent(host, *extra)


def wait_ping(ov: OverlayLab, src: str, dst: str, timeout: float = 20.0) -> float:
    ip = ov.containers[dst]
    return wait_for(lambda: ov.ping(src, ip, wait=0.5), timeout, interval=0.2, what=f"{src} -> {dst} ({ip}) ping")


def leases_by_host(ov: OverlayLab, hosts: list[str]) -> dict[str, dict[str, Any]]:
    """host -> {key, subnet, gateway (.0), public_ip, mac, value} from etcd."""
    out = {}
    for host in hosts:
        key, value = ov.lease_of(host)
        network, plen = key.split("-", 1)[0], key.split("-", 1)[1].split("&")[0]
        data = value.get("BackendData") or {}
        out[host] = {"key": key, "subnet": f"{network}/{plen}", "gateway": network,
                     "public_ip": value["PublicIP"], "mac": data.get("VtepMAC"), "value": value}
    return out


# ---------------------------------------------------------------------------- iperf3


def iperf(lab: Lab, client: str, server: str, dst_ip: str, seconds: int) -> dict[str, Any]:
    """One iperf3 TCP test client -> server (both lab targets, network namespace only)."""
    srv = lab.popen(server, ["iperf3", "-s", "-1", "-p", str(IPERF_PORT)], netns_only=True,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        doc: dict[str, Any] = {}
        for attempt in range(50):  # until the server listens (bounded)
            out = lab.run(client, ["iperf3", "-c", dst_ip, "-p", str(IPERF_PORT), "-t", str(seconds), "-J"],
                          netns_only=True, check=False, capture_output=True, text=True, timeout=seconds + 60)
            try:
                doc = json.loads(out.stdout)
            except ValueError:
                doc = {"error": (out.stdout + out.stderr).strip()[-300:] or f"exit {out.returncode}"}
            err = str(doc.get("error", ""))
            if err and ("connect" in err or "refused" in err) and attempt < 49 and srv.poll() is None:
                time.sleep(0.1)
                continue
            break
        if "error" in doc:
            raise RuntimeError(f"iperf3 {client} -> {server} {dst_ip}: {doc['error']}")
        end = doc["end"]
        return {"gbit": round(end["sum_received"]["bits_per_second"] / 1e9, 3),
                "retransmits": int(end["sum_sent"].get("retransmits") or 0),
                "cpu_sender": round(end.get("cpu_utilization_percent", {}).get("host_total", 0.0), 1),
                "cpu_receiver": round(end.get("cpu_utilization_percent", {}).get("remote_total", 0.0), 1)}
    finally:
        if srv.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                srv.wait(5)
        if srv.poll() is None:
            srv.kill()  # by PID: `ip netns exec` execs iperf3 in place
            srv.wait(5)


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    """utime + stime + cutime + cstime of *pid* (its iptables children included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15])


def measured(ov: OverlayLab, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run *fn* (one iperf3 test); add the CPU the running agents used meanwhile, in % of
    one core (summed over the agents)."""
    pids = []
    for host in list(ov.agents):
        with contextlib.suppress(OSError, AssertionError, ValueError):
            pids.append(ov.agent_pid(host))
    before = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            before[pid] = cpu_ticks(pid)
    t0 = time.monotonic()
    run = fn()
    wall = time.monotonic() - t0
    used = 0
    for pid, ticks in before.items():
        with contextlib.suppress(OSError):
            used += cpu_ticks(pid) - ticks
    if before:
        run["agents_cpu_pct"] = round(used / CLK_TCK / wall * 100, 1)
    return run


class Series:
    """The runs of one figure."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.runs: list[dict[str, Any]] = []

    def add(self, run: dict[str, Any]) -> None:
        run["load"] = loadavg()
        self.runs.append(run)
        cpu = f"  agents cpu {run['agents_cpu_pct']} %" if "agents_cpu_pct" in run else ""
        log(f"  {self.name:16s} run {len(self.runs)}: {run['gbit']:6.2f} Gbit/s  "
            f"retransmits {run['retransmits']}  load {run['load']}{cpu}")

    @property
    def median(self) -> float | None:
        return round(statistics.median(r["gbit"] for r in self.runs), 3) if self.runs else None

    def to_json(self) -> dict[str, Any]:
        doc = {"median_gbit": self.median, "gbit": [r["gbit"] for r in self.runs],
               "retransmits": [r["retransmits"] for r in self.runs], "runs": self.runs}
        cpu = [r["agents_cpu_pct"] for r in self.runs if "agents_cpu_pct" in r]
        if cpu:
            doc["agents_cpu_pct"] = cpu
        return doc


# ---------------------------------------------------------------------------- throughput: vxlan


def link_details(lab: Lab, host: str, dev: str) -> str:
    return lab.run(host, ["ip", "-d", "link", "show", "dev", dev], netns_only=True, capture_output=True,
                   text=True, check=False).stdout.strip()


def device_tokens(details: str) -> list[str]:
    """`ip -d link show` of a device as tokens, without its index and name."""
    tokens = details.split()
    return tokens[2:] if len(tokens) > 2 else tokens


def build_hand_vxlan(lab: Lab, host: str, me: dict[str, Any], peers: list[dict[str, Any]], mtu: int) -> None:
    """A kernel VXLAN by hand, with flannel's structure, inside *host*'s namespace."""
    run = lambda *argv: lab.run(host, list(argv), netns_only=True, capture_output=True, text=True)  # noqa: E731
    run("ip", "link", "add", HAND_DEV, "address", me["mac"], "mtu", str(mtu), "type", "vxlan", "id", str(VNI),
        "local", me["public_ip"], "dev", "eth0", "dstport", str(VXLAN_PORT), "nolearning")
    run("ip", "addr", "add", f"{me['gateway']}/32", "dev", HAND_DEV)
    run("ip", "link", "set", HAND_DEV, "up")
    for p in peers:
        run("ip", "neigh", "replace", p["gateway"], "lladdr", p["mac"], "dev", HAND_DEV, "nud", "permanent")
        run("bridge", "fdb", "append", p["mac"], "dev", HAND_DEV, "dst", p["public_ip"], "self", "permanent")
        run("ip", "route", "replace", p["subnet"], "via", p["gateway"], "dev", HAND_DEV, "onlink")


def delete_link(lab: Lab, host: str, dev: str) -> bool:
    return lab.run(host, ["ip", "link", "del", "dev", dev], netns_only=True, check=False,
                   capture_output=True).returncode == 0


def bench_vxlan(b: Bench) -> dict[str, Any]:
    """Rounds of: agents running (flannel.1) -> agents stopped by SIGTERM (flannel.1 left)
    -> hand-made VXLAN (flannel.1 deleted); the hand-made device is removed and the agents
    started again for the next round."""
    args = b.args
    series = {"agents": Series("vxlan"), "stopped": Series("vxlan, stopped"), "hand": Series("hand-made vxlan")}
    info: dict[str, Any] = {}
    with b.lab(2, "vxlan") as lab:
        hosts = lab.hosts
        ov = b.overlay(lab, {"Type": "vxlan"}, "vxlan")
        state = "none"
        try:
            ov.put_config(NETWORK)
            start_agents(ov, hosts)
            state = "agents"
            ov.add_container("h1", "c1")
            ov.add_container("h2", "c2")
            wait_ping(ov, "c1", "c2")
            leases = leases_by_host(ov, hosts)
            mtu = int(lab.container("c1")["mtu"])
            info["leases"] = {h: v["value"] for h, v in leases.items()}
            info["mtu"] = mtu
            agent_dev = link_details(lab, "h1", "flannel.1")
            info["agent_device_h1"] = agent_dev
            first = {"stopped": True, "hand": True}

            def to_agents() -> None:
                for h in hosts:
                    delete_link(lab, h, HAND_DEV)
                start_agents(ov, hosts)
                wait_for(lambda: all(link_details(lab, h, "flannel.1") for h in hosts), 20, what="flannel.1 back")
                wait_ping(ov, "c1", "c2")

            def to_stopped() -> None:
                ov.stop_all()  # SIGTERM by PID: the data plane stays
                survived = ov.ping("c1", ov.containers["c2"], count=3, wait=1)
                if first["stopped"]:
                    info["data_plane_survived_sigterm"] = survived
                first["stopped"] = False
                if not survived:
                    b.note("vxlan: c1 could not ping c2 after the agents were stopped with SIGTERM")
                    wait_ping(ov, "c1", "c2")

            def to_hand() -> None:
                ov.stop_all()
                for h in hosts:
                    if link_details(lab, h, "flannel.1") and not delete_link(lab, h, "flannel.1"):
                        raise RuntimeError(f"could not delete flannel.1 on {h}")
                for h in hosts:
                    build_hand_vxlan(lab, h, leases[h], [leases[p] for p in hosts if p != h], mtu)
                wait_ping(ov, "c1", "c2")
                if first["hand"]:
                    first["hand"] = False
                    hand_dev = link_details(lab, "h1", HAND_DEV)
                    info["hand_device_h1"] = hand_dev
                    a, m = device_tokens(agent_dev), device_tokens(hand_dev)
                    info["devices_identical"] = a == m
                    if a != m:
                        only_a = [t for t in a if t not in m]
                        only_m = [t for t in m if t not in a]
                        b.note(f"vxlan: `ip -d link` of flannel.1 (agent) and of the hand-made device differ: "
                               f"agent only {only_a}, hand-made only {only_m}")

            steps = ("agents", "stopped", "hand")
            order = [s for s in steps for _ in range(args.runs)] if args.sequential \
                else [s for _ in range(args.runs) for s in steps]
            moves = {"agents": to_agents, "stopped": to_stopped, "hand": to_hand}
            for want in order:
                if want != state:
                    moves[want]()
                    state = want
                series[want].add(measured(ov, lambda: iperf(lab, "c1", "c2", ov.containers["c2"], args.seconds)))
        finally:
            ov.stop_all()
            if state == "hand":
                for h in hosts:
                    delete_link(lab, h, HAND_DEV)
    return {"vxlan": series["agents"].to_json(), "vxlan_stopped": series["stopped"].to_json(),
            "vxlan_hand": series["hand"].to_json(), "vxlan_info": info}


# ---------------------------------------------------------------------------- throughput: host-gw


def bench_hostgw(b: Bench) -> dict[str, Any]:
    """Underlay (host to host) alternated with host-gw (agents running); then, with the
    agents stopped by SIGTERM (routes left in place), for information: host-gw, and the
    path with a container on one side only (host -> container, container -> host), which
    shows what each veth + bridge + forwarding hop costs against the underlay."""
    args = b.args
    under, hostgw, stopped = Series("underlay"), Series("host-gw"), Series("host-gw, stopped")
    to_ctr, from_ctr = Series("host -> container"), Series("container -> host")
    info: dict[str, Any] = {}
    with b.lab(2, "hostgw") as lab:
        ov = b.overlay(lab, {"Type": "host-gw"}, "hostgw")
        try:
            ov.put_config(NETWORK)
            start_agents(ov, lab.hosts)
            ov.add_container("h1", "c1")
            ov.add_container("h2", "c2")
            wait_ping(ov, "c1", "c2")
            info["mtu_container"] = int(lab.container("c1")["mtu"])
            info["mtu_underlay"] = int(re.search(r"mtu (\d+)", link_details(lab, "h1", "eth0")).group(1))
            info["route_h1"] = ov.ip("h1", "-4", "route", "show", leases_by_host(ov, ["h2"])["h2"]["subnet"]).strip()
            for _ in range(args.runs):  # alternated: the same noise for both
                under.add(measured(ov, lambda: iperf(lab, "h1", "h2", lab.host_address("h2"), args.seconds)))
                hostgw.add(measured(ov, lambda: iperf(lab, "c1", "c2", ov.containers["c2"], args.seconds)))
            ov.stop_all()
            wait_ping(ov, "c1", "c2")
            for _ in range(args.runs):
                stopped.add(iperf(lab, "c1", "c2", ov.containers["c2"], args.seconds))
                to_ctr.add(iperf(lab, "h1", "c2", ov.containers["c2"], args.seconds))
                from_ctr.add(iperf(lab, "c1", "h2", lab.host_address("h2"), args.seconds))
        finally:
            ov.stop_all()
    return {"underlay": under.to_json(), "host-gw": hostgw.to_json(), "hostgw_stopped": stopped.to_json(),
            "hostgw_to_container": to_ctr.to_json(), "hostgw_from_container": from_ctr.to_json(),
            "hostgw_info": info}


# ---------------------------------------------------------------------------- throughput: udp


def bench_udp(b: Bench) -> dict[str, Any]:
    args = b.args
    fast, plain = Series("udp fast path"), Series("udp per-packet")
    info: dict[str, Any] = {}
    with b.lab(2, "udp") as lab:
        hosts = lab.hosts
        ov = b.overlay(lab, {"Type": "udp"}, "udp")
        try:
            ov.put_config(NETWORK)
            start_agents(ov, hosts)
            ov.add_container("h1", "c1")
            ov.add_container("h2", "c2")
            wait_ping(ov, "c1", "c2")
            info["leases_fast"] = {h: v["value"] for h, v in leases_by_host(ov, hosts).items()}
            if not all("Overlaynet" in (v.get("BackendData") or {}) for v in info["leases_fast"].values()):
                b.note(f"udp: the agents' leases do not advertise the fast path: {info['leases_fast']}")
            info["mtu"] = int(lab.container("c1")["mtu"])
            for _ in range(args.runs):
                fast.add(measured(ov, lambda: iperf(lab, "c1", "c2", ov.containers["c2"], args.seconds)))
            flag = agent_has_flag("udp-fast-path")
            info["agent_has_udp_fast_path_flag"] = flag
            if not flag:
                b.note("udp per-packet: MISSING - bin/flannel-agent has no --udp-fast-path flag yet "
                       "(needed to start both agents in flannel's per-packet format)")
            else:
                ov.stop_all()
                start_agents(ov, hosts, "--udp-fast-path=false")
                wait_for(lambda: not any((v.get("BackendData") or {}).get("Overlaynet")
                                         for v in ov.leases().values()), 15, what="leases without fast path")
                info["leases_plain"] = {h: v["value"] for h, v in leases_by_host(ov, hosts).items()}
                wait_ping(ov, "c1", "c2")
                for _ in range(args.runs):
                    plain.add(measured(ov, lambda: iperf(lab, "c1", "c2", ov.containers["c2"], args.seconds)))
        finally:
            ov.stop_all()
    return {"udp_fast": fast.to_json(), "udp_plain": plain.to_json(), "udp_info": info}


# ---------------------------------------------------------------------------- convergence

WRITER = r"""
import json, sys, time
import etcd3
host, port = sys.argv[1], int(sys.argv[2])
client = etcd3.client(host=host, port=port, timeout=10)
client.status()
leases = {}
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    try:
        if req["op"] == "put":
            lease = client.lease(req["ttl"])
            leases[req["key"]] = lease
            key, value = req["key"], req["value"]
            t = time.time()
            ok, _ = client.transaction(compare=[client.transactions.version(key) == 0],
                                       success=[client.transactions.put(key, value, lease=lease)], failure=[])
            print(json.dumps({"ok": ok, "t": t}), flush=True)
        elif req["op"] == "del":
            t = time.time()
            client.delete(req["key"])
            lease = leases.pop(req["key"], None)
            if lease is not None:
                lease.revoke()
            print(json.dumps({"ok": True, "t": t}), flush=True)
        else:
            break
    except Exception as exc:
        print(json.dumps({"ok": False, "error": repr(exc)}), flush=True)
for lease in leases.values():
    try:
        lease.revoke()
    except Exception:
        pass
"""


class LineReader:
    """Reads a process's stdout in a thread; every line stamped with time.time() on receipt."""

    def __init__(self, proc: subprocess.Popen[str], name: str) -> None:
        self.proc, self.name = proc, name
        self.lines: list[tuple[float, str]] = []
        self.queue: queue.Queue[tuple[float, str]] = queue.Queue()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, name=f"reader-{name}", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            item = (time.time(), line.rstrip("\n"))
            with self.lock:
                self.lines.append(item)
            self.queue.put(item)

    def count(self) -> int:
        with self.lock:
            return len(self.lines)

    def since(self, index: int) -> list[tuple[float, str]]:
        with self.lock:
            return self.lines[index:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # by PID (`ip netns exec` execs in place)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.thread.join(5)


def first_route_event(lines: list[tuple[float, str]], subnet: str, deleted: bool) -> float | None:
    for t, line in lines:
        is_del = line.startswith("Deleted ")
        body = line[len("Deleted "):] if is_del else line
        if is_del == deleted and body.split(" ", 1)[0] == subnet:
            return t
    return None


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100): with 20 samples, p99 is the largest."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def bench_convergence(b: Bench) -> dict[str, Any]:
    args = b.args
    result: dict[str, Any] = {"joins": [], "removals_ms": []}
    with b.lab(3, "conv") as lab:
        hosts = lab.hosts
        ov = b.overlay(lab, {"Type": "vxlan"}, "conv")
        watchers: dict[str, LineReader] = {}
        writer: LineReader | None = None
        created: list[str] = []
        try:
            ov.put_config(NETWORK)
            start_agents(ov, hosts)
            real = leases_by_host(ov, hosts)
            for h in hosts:  # every agent has programmed every other host: it is watching
                for p in hosts:
                    if p != h:
                        wait_for(lambda h=h, p=p: real[p]["subnet"] in ov.routes_to(h, real[p]["subnet"]), 20,
                                 what=f"route to {p} on {h}")
            for h in hosts:
                proc = lab.popen(h, ["ip", "-4", "monitor", "route"], netns_only=True, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True, bufsize=1)
                watchers[h] = LineReader(proc, h)
            endpoint = lab.etcd_endpoints[0]
            etcd_host, etcd_port = re.match(r"https?://([^:/]+):(\d+)", endpoint).groups()
            wproc = lab.popen("etcd1", [sys.executable, "-u", "-c", WRITER, etcd_host, etcd_port], netns_only=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(b.logs / "writer.log", "w"),
                              text=True, bufsize=1)
            writer = LineReader(wproc, "writer")

            def reply(timeout: float = 20.0) -> dict[str, Any]:
                try:
                    _, line = writer.queue.get(timeout=timeout)
                except queue.Empty:
                    raise RuntimeError(f"the etcd writer did not answer within {timeout}s "
                                       f"(see {b.logs / 'writer.log'})") from None
                return json.loads(line)

            def send(req: dict[str, Any]) -> dict[str, Any]:
                assert wproc.stdin is not None
                wproc.stdin.write(json.dumps(req) + "\n")
                wproc.stdin.flush()
                answer = reply()
                if not answer.get("ok"):
                    raise RuntimeError(f"etcd writer: {req['op']} {req['key']} failed: {answer}")
                return answer

            if not reply().get("ready"):
                raise RuntimeError("the etcd writer did not start")
            time.sleep(0.5)  # the monitors are subscribed by now
            taken = {v["subnet"] for v in real.values()}
            base = lab.subnet.rsplit(".", 1)[0]  # underlay /24
            joins = args.joins + 1  # the first one is a warm-up
            cand = [f"10.5.{n}.0/24" for n in range(200, 255) if f"10.5.{n}.0/24" not in taken][:joins]
            for i, subnet in enumerate(cand):
                key = f"{PREFIX}/subnets/{subnet.replace('/', '-')}"
                mac = f"02:be:7c:00:{i // 256:02x}:{i % 256:02x}"
                value = json.dumps({"PublicIP": f"{base}.{150 + i}", "PublicIPv6": None, "BackendType": "vxlan",
                                    "BackendData": {"VNI": VNI, "VtepMAC": mac}})
                marks = {h: w.count() for h, w in watchers.items()}
                answer = send({"op": "put", "key": key, "value": value, "ttl": 900})
                created.append(key)
                t_put = answer["t"]
                seen: dict[str, float] = {}
                deadline = time.monotonic() + 10
                while len(seen) < len(hosts) and time.monotonic() < deadline:
                    for h, w in watchers.items():
                        if h not in seen:
                            t = first_route_event(w.since(marks[h]), subnet, deleted=False)
                            if t is not None:
                                seen[h] = t
                    time.sleep(0.002)
                missing = [h for h in hosts if h not in seen]
                if missing:
                    raise RuntimeError(f"convergence: route {subnet} did not appear on {missing} within 10s")
                per_host = {h: round((seen[h] - t_put) * 1000, 1) for h in hosts}
                latency = max(per_host.values())
                entry = {"subnet": subnet, "ms": latency, "per_host_ms": per_host, "warmup": i == 0}
                result["joins"].append(entry)
                log(f"  join {i}{' (warm-up)' if i == 0 else ''}: {subnet} on every host after {latency:.1f} ms "
                    f"{per_host}")
                time.sleep(0.1)
            # remove the fake leases; the agents tear the routes down
            for key in list(created):
                subnet = key.rsplit("/", 1)[1].replace("-", "/")
                marks = {h: w.count() for h, w in watchers.items()}
                answer = send({"op": "del", "key": key})
                created.remove(key)
                gone: dict[str, float] = {}
                deadline = time.monotonic() + 10
                while len(gone) < len(hosts) and time.monotonic() < deadline:
                    for h, w in watchers.items():
                        if h not in gone:
                            t = first_route_event(w.since(marks[h]), subnet, deleted=True)
                            if t is not None:
                                gone[h] = t
                    time.sleep(0.002)
                if len(gone) < len(hosts):
                    b.note(f"convergence: route {subnet} still present on "
                           f"{[h for h in hosts if h not in gone]} 10 s after its lease was deleted")
                else:
                    result["removals_ms"].append(round((max(gone.values()) - answer["t"]) * 1000, 1))
            left = [k for k in ov.leases() if k.startswith("10.5.2") and int(k.split(".")[2]) >= 200]
            if left:
                b.note(f"convergence: fake leases left in etcd: {left}")
        finally:
            if writer is not None:
                for key in created:  # after a failure: remove what we made
                    with contextlib.suppress(Exception):
                        lab.etcdctl("del", key, check=False)
                if writer.proc.poll() is None and writer.proc.stdin is not None:
                    with contextlib.suppress(OSError):
                        writer.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                        writer.proc.stdin.close()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        writer.proc.wait(10)
                writer.stop()
            for w in watchers.values():
                w.stop()
            ov.stop_all()
    counted = [j["ms"] for j in result["joins"] if not j["warmup"]]
    if counted:
        result["p50_ms"] = percentile(counted, 50)
        result["p99_ms"] = percentile(counted, 99)
        result["max_ms"] = max(counted)
        result["n"] = len(counted)
    if result["removals_ms"]:
        result["removal_p50_ms"] = percentile(result["removals_ms"], 50)
        result["removal_p99_ms"] = percentile(result["removals_ms"], 99)
    return result


# ---------------------------------------------------------------------------- report


def fmt_g(v: float | None) -> str:
    return "missing" if v is None else f"{v:.2f} Gbit/s"


def runs_of(res: dict[str, Any], key: str) -> str:
    s = res.get(key)
    return " ".join(f"{g:.2f}" for g in s["gbit"]) if s and s["gbit"] else "-"


def build_table(res: dict[str, Any]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []

    def med(key: str) -> float | None:
        return (res.get(key) or {}).get("median_gbit")

    def row(figure: str, value: str, target: str, verdict: str, runs: str = "") -> None:
        rows.append({"figure": figure, "value": value, "target": target, "ratio/pass": verdict, "runs": runs})

    def ratio_row(figure: str, key: str, ref: str, ref_name: str, target: float) -> None:
        v, r = med(key), med(ref)
        if v is None or not r:
            verdict = "MISSING"
        else:
            ratio = v / r
            verdict = f"{ratio * 100:.1f} % {'PASS' if ratio >= target else 'FAIL'}"
        row(figure, fmt_g(v), f">= {target * 100:.0f} % of {ref_name}", verdict, runs_of(res, key))

    def info_ratio(figure: str, key: str, ref: str, ref_name: str) -> None:
        v, r = med(key), med(ref)
        if v is None:
            return
        verdict = f"{v / r * 100:.1f} % of {ref_name}" if r else "-"
        row(figure, fmt_g(v), "(info)", verdict, runs_of(res, key))

    def abs_row(figure: str, key: str, target: float) -> None:
        v = med(key)
        verdict = "MISSING" if v is None else ("PASS" if v >= target else "FAIL")
        row(figure, fmt_g(v), f">= {target} Gbit/s", verdict, runs_of(res, key))

    if "vxlan" in res:
        row("kernel VXLAN by hand", fmt_g(med("vxlan_hand")), "(reference)", "-", runs_of(res, "vxlan_hand"))
        ratio_row("vxlan (agent)", "vxlan", "vxlan_hand", "hand-made", TARGETS["vxlan_ratio"])
        info_ratio("vxlan, agents stopped (info)", "vxlan_stopped", "vxlan_hand", "hand-made")
    if "host-gw" in res:
        row("underlay veth (host-host)", fmt_g(med("underlay")), "(reference)", "-", runs_of(res, "underlay"))
        ratio_row("host-gw (agent)", "host-gw", "underlay", "underlay", TARGETS["hostgw_ratio"])
        info_ratio("host-gw, agents stopped (info)", "hostgw_stopped", "underlay", "underlay")
        info_ratio("  host -> container (info)", "hostgw_to_container", "underlay", "underlay")
        info_ratio("  container -> host (info)", "hostgw_from_container", "underlay", "underlay")
    if "udp_fast" in res:
        abs_row("udp fast path (GSO)", "udp_fast", TARGETS["udp_fast_gbit"])
        abs_row("udp per-packet (flannel)", "udp_plain", TARGETS["udp_plain_gbit"])
    conv = res.get("convergence")
    if conv is not None:
        n = conv.get("n", 0)
        if "p99_ms" in conv:
            row(f"convergence p50 ({n} joins)", f"{conv['p50_ms']:.1f} ms", "(info)", "-")
            ok = conv["p99_ms"] < TARGETS["convergence_p99_ms"]
            row(f"convergence p99 ({n} joins)", f"{conv['p99_ms']:.1f} ms",
                f"< {TARGETS['convergence_p99_ms']:.0f} ms", "PASS" if ok else "FAIL")
        else:
            row("convergence p99", "missing", f"< {TARGETS['convergence_p99_ms']:.0f} ms", "MISSING")
        if "removal_p99_ms" in conv:
            row("lease deleted -> route gone p99", f"{conv['removal_p99_ms']:.1f} ms", "(info)", "-")
    return rows


def print_table(rows: list[dict[str, str]], out: Any) -> None:
    cols = ["figure", "value", "target", "ratio/pass", "runs"]
    heads = {"runs": "runs (Gbit/s)"}
    widths = {c: max(len(heads.get(c, c)), *(len(r[c]) for r in rows)) for c in cols}
    line = "  ".join(heads.get(c, c).ljust(widths[c]) for c in cols)
    print(line.rstrip(), file=out)
    print("  ".join("-" * widths[c] for c in cols), file=out)
    for r in rows:
        print("  ".join(r[c].ljust(widths[c]) for c in cols).rstrip(), file=out)


# ---------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["throughput", "convergence"], help="run one part only")
    parser.add_argument("--backends", default="vxlan,host-gw,udp",
                        help="throughput groups, comma separated (vxlan,host-gw,udp); default all")
    parser.add_argument("--seconds", type=int, default=5, help="iperf3 -t (default 5)")
    parser.add_argument("--runs", type=int, default=3, help="iperf3 runs per figure (default 3)")
    parser.add_argument("--joins", type=int, default=20, help="convergence joins measured (default 20)")
    parser.add_argument("--sequential", action="store_true",
                        help="vxlan: all agent runs, then all hand-made runs (default: alternated)")
    parser.add_argument("--prefix", default="oflbn-", help="namespace prefix of the bench's labs")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    parser.add_argument("--json-file", help="also write the JSON results to this file")
    parser.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                        help="first wait up to SECONDS for the 1-minute load average to drop below "
                             "--idle-load (default 0: do not wait)")
    parser.add_argument("--idle-load", type=float, default=0.5)
    parser.add_argument("--keep-logs", action="store_true", help="keep the work dir (agent logs) on success")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces, TUN and VXLAN devices)", file=sys.stderr)
        return 2
    if args.runs < 1 or args.seconds < 1 or args.joins < 1:
        parser.error("--runs, --seconds and --joins must be at least 1")
    backends = [x.strip() for x in args.backends.split(",") if x.strip()]
    unknown = set(backends) - {"vxlan", "host-gw", "udp"}
    if unknown:
        parser.error(f"unknown --backends {sorted(unknown)}; use vxlan, host-gw, udp")

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    if args.wait_idle > 0:
        deadline = time.monotonic() + args.wait_idle
        while loadavg() >= args.idle_load and time.monotonic() < deadline:
            log(f"waiting for the box to calm down: load average {loadavg()} (>= {args.idle_load})")
            time.sleep(10)
    b = Bench(args)
    others = sorted({ns.split()[0] for ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                                             check=False).stdout.splitlines()
                     if ns.strip() and not ns.startswith(args.prefix)})
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "kernel": platform.release(), "cpus": os.cpu_count(),
        "load_before": loadavg(), "seconds": args.seconds, "runs": args.runs, "joins": args.joins,
        "vxlan_order": "sequential" if args.sequential else "alternated", "workdir": str(b.workdir),
        "other_namespaces": others,
    }
    if meta["load_before"] > 0.5:
        b.note(f"load average {meta['load_before']} before the run: the box is busy, throughput will be low/noisy")
    if others:
        b.note(f"{len(others)} network namespaces of others exist while this runs "
               f"({', '.join(others[:8])}{' ...' if len(others) > 8 else ''}): other labs may be running")
    log(f"work dir {b.workdir}; load average {meta['load_before']}")
    res: dict[str, Any] = {}
    started = time.monotonic()
    try:
        if args.only in (None, "throughput"):
            if "vxlan" in backends:
                res.update(bench_vxlan(b))
            if "host-gw" in backends:
                res.update(bench_hostgw(b))
            if "udp" in backends:
                res.update(bench_udp(b))
        if args.only in (None, "convergence"):
            res["convergence"] = bench_convergence(b)
    except BaseException as exc:  # noqa: BLE001 - report what was measured, then fail
        b.failed = True
        b.note(f"ABORTED: {type(exc).__name__}: {exc}")
        for path in sorted(b.logs.rglob("*.log")):
            text = path.read_text(errors="replace").strip().splitlines()
            if text:
                log(f"--- last lines of {path}:\n" + "\n".join(text[-15:]))
    meta["load_after"] = loadavg()
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    for key in ("vxlan", "vxlan_stopped", "vxlan_hand", "underlay", "host-gw", "hostgw_stopped", "udp_fast",
                "udp_plain"):
        s = res.get(key)
        if s and key in ("vxlan", "host-gw") and s.get("agents_cpu_pct") and \
                statistics.median(s["agents_cpu_pct"]) >= 2:
            b.note(f"{key}: the two agents used {s['agents_cpu_pct']} % of a core during the runs "
                   f"(reconcile every 1 s, etcd probe every 1 s, as in the overlay tests)")
        if s and s["gbit"] and len(s["gbit"]) > 1 and min(s["gbit"]) < 0.8 * max(s["gbit"]):
            b.note(f"{key}: runs spread widely ({min(s['gbit']):.2f}..{max(s['gbit']):.2f} Gbit/s): noisy box")
    retrans = [f"{k} {res[k]['retransmits']}" for k in res if isinstance(res[k], dict) and res[k].get("retransmits")
               and any(res[k]["retransmits"])]
    if retrans:
        b.note("TCP retransmits per run: " + ", ".join(retrans))
    rows = build_table(res)
    doc = {"meta": meta, "results": res, "table": rows, "notes": b.notes, "targets": TARGETS, "failed": b.failed}
    if args.json_file:
        Path(args.json_file).write_text(json.dumps(doc, indent=2) + "\n")
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print()
        print(f"overlaynet.flannel overlay bench - iperf3 TCP container -> container, -t {args.seconds} x "
              f"{args.runs} runs (median), {meta['cpus']} CPUs, kernel {meta['kernel']}, load "
              f"{meta['load_before']} -> {meta['load_after']}, {meta['elapsed_s']} s")
        print_table(rows, sys.stdout)
        if b.notes:
            print("notes:")
            for n in b.notes:
                print(f"  - {n}")
    if b.failed or args.keep_logs:
        log(f"logs kept in {b.workdir}")
    else:
        import shutil
        shutil.rmtree(b.workdir, ignore_errors=True)
    return 1 if b.failed else 0


if __name__ == "__main__":
    sys.exit(main())
