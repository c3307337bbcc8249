"""What every benchmark group shares: the run's state, iperf3 runs, their series, the
agents' CPU share, and small steps on an overlay (agents, pings, leases)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lab import Lab, LabError
from lab.overlay import AGENT, Overlay
from lab.wait import wait_for

IPERF_PORT = 5201
NETWORK = "10.5.0.0/16"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


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

    def overlay(self, lab: Lab, backend: dict[str, Any], name: str) -> Overlay:
        logs = self.logs / name
        logs.mkdir(exist_ok=True)
        return Overlay(lab, backend, logs)


def agent_has_flag(flag: str) -> bool:
    """Whether bin/flannel-agent knows *flag* (argparse only; nothing is touched)."""
    out = subprocess.run([sys.executable, str(AGENT), "--help"], capture_output=True, text=True,
                         timeout=60, check=False)
    return f"--{flag}" in out.stdout


def start_agents(ov: Overlay, hosts: list[str], *extra: str) -> None:
    for host in hosts:
        ov.start_agent(host, *extra)


def wait_ping(ov: Overlay, src: str, dst: str, timeout: float = 20.0) -> float:
    ip = ov.containers[dst]
    return wait_for(lambda: ov.ping(src, ip, wait=0.5), timeout, interval=0.2, what=f"{src} -> {dst} ({ip}) ping")


def two_containers(ov: Overlay) -> None:
    """c1 on h1 and c2 on h2, once c1 reaches c2 (the agents run)."""
    ov.add_container("h1", "c1")
    ov.add_container("h2", "c2")
    wait_ping(ov, "c1", "c2")


@contextlib.contextmanager
def two_host_overlay(b: Bench, kind: str) -> Iterator[tuple[Lab, Overlay]]:
    """A fresh 2-host lab whose agents run backend *kind*, with containers c1 on h1 and
    c2 on h2 that reach each other; the agents are stopped (SIGTERM) afterwards."""
    name = kind.replace("-", "")
    with b.lab(2, name) as lab:
        ov = b.overlay(lab, {"Type": kind}, name)
        try:
            ov.put_config(NETWORK)
            start_agents(ov, lab.hosts)
            two_containers(ov)
            yield lab, ov
        finally:
            ov.stop_all()


def leases_by_host(ov: Overlay, hosts: list[str]) -> dict[str, dict[str, Any]]:
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


def _iperf_doc(lab: Lab, client: str, dst_ip: str, seconds: int, server: subprocess.Popen[Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for attempt in range(50):  # until the server listens (bounded)
        out = lab.run(client, ["iperf3", "-c", dst_ip, "-p", str(IPERF_PORT), "-t", str(seconds), "-J"],
                      netns_only=True, check=False, capture_output=True, text=True, timeout=seconds + 60)
        try:
            doc = json.loads(out.stdout)
        except ValueError:
            doc = {"error": (out.stdout + out.stderr).strip()[-300:] or f"exit {out.returncode}"}
        err = str(doc.get("error", ""))
        if err and ("connect" in err or "refused" in err) and attempt < 49 and server.poll() is None:
            time.sleep(0.1)
            continue
        break
    return doc


def iperf(lab: Lab, client: str, server: str, dst_ip: str, seconds: int) -> dict[str, Any]:
    """One iperf3 TCP test client -> server (both lab targets, network namespace only)."""
    srv = lab.popen(server, ["iperf3", "-s", "-1", "-p", str(IPERF_PORT)], netns_only=True,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        doc = _iperf_doc(lab, client, dst_ip, seconds, srv)
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


def cpu_ticks(pid: int) -> int:
    """utime + stime + cutime + cstime of *pid* (its iptables children included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15])


def measured(ov: Overlay, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run *fn* (one iperf3 test); add the CPU the running agents used meanwhile, in % of
    one core (summed over the agents)."""
    pids = []
    for host in list(ov.agents):
        with contextlib.suppress(OSError, LabError, ValueError):
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


def c1_to_c2(lab: Lab, ov: Overlay, seconds: int) -> dict[str, Any]:
    """iperf3 container c1 -> container c2, with the agents' CPU share."""
    return measured(ov, lambda: iperf(lab, "c1", "c2", ov.containers["c2"], seconds))


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
