"""The rig of the scale benchmarks: etcd on a switch, N fake peer leases written straight
into etcd, one agent in its own namespace, and what the kernel of that namespace holds.

    <prefix>ul     bridge br0 172.20.0.2/16, etcd on http://172.20.0.2:2379
    <prefix>agent  eth0 172.20.0.10/16 on br0, the agent (bin/flannel-agent, default intervals)
    <prefix>ref    the `ip -batch` reference: eth0 (a veth) and flannel.1, no agent

Peer i (from 1) holds subnet 10.<i // 256>.<i % 256>.0/24, PublicIP 172.20.<1 + i // 250>.<1 + i % 250>
(on the underlay /16, so host-gw can route via it; nothing is ever sent there) and VtepMAC
02:00:<i as 4 bytes>.

What "programmed" means per backend: vxlan, the peer's route + neighbour + FDB entry;
host-gw, its route; udp, its entry in the forwarder's peer table (the kernel holds one
route for the whole network via flannel0), read from the table the backend saves on every
change (``udp-peers.json`` beside the subnet file).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ansible_collections.overlaynet.flannel.plugins.module_utils.host import rtnl
from lab import netns
from lab.rig import Rig

REPO = Path(__file__).resolve().parents[1]
AGENT = REPO / "bin" / "flannel-agent"
UNDERLAY = "172.20.0.0/16"
ETCD_OFFSET, AGENT_OFFSET = 2, 10
NETWORK = "10.0.0.0/8"
RTMGRP_IPV4_ROUTE = 0x40
PREFIX = "/oflz/network"


def peer(i: int, backend: str) -> tuple[str, str, str]:
    """(subnet, public ip, etcd value) of peer i."""
    subnet = f"10.{i // 256}.{i % 256}.0/24"
    public_ip = f"172.20.{1 + i // 250}.{1 + i % 250}"
    value: dict[str, Any] = {"PublicIP": public_ip, "PublicIPv6": None, "BackendType": backend}
    if backend == "vxlan":
        value["BackendData"] = {"VNI": 1, "VtepMAC": mac_of(i)}
    return subnet, public_ip, json.dumps(value, separators=(",", ":"))


def mac_of(i: int) -> str:
    return "02:00:" + ":".join(f"{b:02x}" for b in i.to_bytes(4, "big"))


def key_of(subnet: str) -> str:
    return f"{PREFIX}/subnets/{subnet.replace('/', '-')}"


class ScaleLab:
    """One run's rig; close() removes everything (namespaces, etcd, agent by PID)."""

    def __init__(self, prefix: str, backend: str, profile: Path | None = None) -> None:
        """*profile*: run the agent under cProfile, its stats written there when it exits."""
        self.backend = backend
        self.profile = profile
        self.rig = Rig(prefix, subnet=UNDERLAY)
        self.agent: subprocess.Popen[bytes] | None = None
        self.writer: subprocess.Popen[str] | None = None
        try:
            self.rig.build_switch(offset=ETCD_OFFSET)
            self.rig.start_etcd([self.rig.address(ETCD_OFFSET)], names=["scale"])
            self.ns = self.rig.node("agent", AGENT_OFFSET)
            self.writer = self.rig.popen(self.rig.switch, sys.executable, str(REPO / "bench" / "etcd_writer.py"),
                                         f"{self.rig.address(ETCD_OFFSET)}:2379", stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, text=True)
            self.rt = rtnl.Rtnl(self.ns)
        except BaseException:
            self.rig.close()
            raise

    def close(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.terminate()  # SIGTERM by PID: the agent exits cleanly (a profile is saved)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.agent.wait(30)
        if self.writer is not None and self.writer.stdin is not None:
            self.writer.stdin.close()
        self.rig.close()  # kills by PID whatever still runs

    # ---- etcd ---------------------------------------------------------------------------

    def _send(self, command: dict[str, Any]) -> tuple[float, float]:
        assert self.writer is not None and self.writer.stdin is not None and self.writer.stdout is not None
        self.writer.stdin.write(json.dumps(command) + "\n")
        self.writer.stdin.flush()
        line = self.writer.stdout.readline()
        if not line:
            raise RuntimeError("the etcd writer died (see its stderr)")
        done = json.loads(line)
        return done["t0"], done["t1"]

    def put_config(self) -> None:
        # The agent's own lease comes from SubnetMin up, away from the peers' (which are
        # valid below it: operators reserve such subnets).
        config = {"Network": NETWORK, "SubnetLen": 24, "SubnetMin": "10.200.0.0", "Backend": {"Type": self.backend}}
        self._send({"put": [[f"{PREFIX}/config", json.dumps(config)]]})

    def put_peers(self, numbers: range) -> tuple[float, float]:
        return self._send({"put": [[key_of(peer(i, self.backend)[0]), peer(i, self.backend)[2]] for i in numbers]})

    def delete_peers(self, numbers: range) -> tuple[float, float]:
        return self._send({"delete": [key_of(peer(i, self.backend)[0]) for i in numbers]})

    # ---- the agent ----------------------------------------------------------------------

    def start_agent(self) -> float:
        """Start the agent; returns the monotonic time just before."""
        log = open(self.rig.tmp / "agent.log", "ab")  # noqa: SIM115 - closed with the process
        args = ["--iface", "eth0", "--subnet-file", str(self.rig.tmp / "subnet.env"),
                "--etcd-endpoints", f"http://{self.rig.address(ETCD_OFFSET)}:2379", "--etcd-prefix", PREFIX]
        env = dict(os.environ, PATH=f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}")
        # cProfile saves the stats when the script exits, SIGTERM (close()) included: the agent
        # leaves its loop on it and returns
        argv = [sys.executable, "-m", "cProfile", "-o", str(self.profile), str(AGENT)] if self.profile else [str(AGENT)]
        t0 = time.monotonic()
        self.agent = self.rig.popen(self.ns, *argv, *args, stdout=log, stderr=log, env=env)
        log.close()
        return t0

    def agent_log(self) -> str:
        return (self.rig.tmp / "agent.log").read_text(errors="replace")[-3000:]

    def rss_mb(self) -> float:
        assert self.agent is not None
        with open(f"/proc/{self.agent.pid}/status") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return kib / 1024

    def cpu_seconds(self) -> float:
        assert self.agent is not None
        with open(f"/proc/{self.agent.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    # ---- the kernel (and the udp forwarder's table) ----------------------------------------

    @property
    def udp_table_file(self) -> Path:
        return self.rig.tmp / "udp-peers.json"  # bringup: the state dir is the subnet file's

    def device_index(self) -> int | None:
        if self.backend != "vxlan" or not netns.link_exists(self.ns, "flannel.1"):
            return None
        return netns.ifindex(self.ns, "flannel.1")

    def programmed(self, numbers: range) -> tuple[int, int]:
        """(how many of these peers are fully programmed, how many have anything left)."""
        if self.backend == "udp":
            table = udp_table(self.udp_table_file)
            count = sum(peer(i, self.backend)[0] in table for i in numbers)
            return count, count
        routes = self.rt.routes()
        index = self.device_index()
        neighbours = self.rt.neighbours(index) if index is not None else {}
        fdb = self.rt.fdb(index) if index is not None else {}
        full = left = 0
        for i in numbers:
            subnet, public_ip, _value = peer(i, self.backend)
            have = [routes.get(subnet) is not None and routes[subnet].proto == 70]
            if self.backend == "vxlan":
                have += [subnet.split("/")[0] in neighbours, public_ip in fdb.get(mac_of(i), ())]
            full += all(have)
            left += any(have)
        return full, left


def udp_table(path: Path) -> set[str]:
    """The subnets in the udp backend's saved peer table (empty while there is none)."""
    try:
        peers = json.loads(path.read_text())["peers"].values()
    except (OSError, ValueError, KeyError):
        return set()
    return {f"{ipaddress.IPv4Address(network)}/{prefixlen}" for network, prefixlen, *_rest in peers}


class TableWatch:
    """When each subnet entered the udp backend's peer table, by destination: the table file
    is rewritten (atomically, a new inode) on every change; polled every millisecond."""

    def __init__(self, path: Path) -> None:
        self.seen: dict[str, float] = {}
        self._path = path
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        last: tuple[int, int] | None = None
        while not self._stop:
            try:
                st = os.stat(self._path)
            except OSError:
                st = None
            now = time.monotonic()
            if st is not None and (st.st_ino, st.st_mtime_ns) != last:
                last = (st.st_ino, st.st_mtime_ns)
                for subnet in udp_table(self._path):
                    self.seen.setdefault(subnet, now)
            time.sleep(0.001)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)


class RouteWatch:
    """When each route appeared (RTM_NEWROUTE from the namespace's kernel), by destination."""

    def __init__(self, ns: str) -> None:
        self.seen: dict[str, float] = {}
        self._sock = rtnl.socket_in(ns)
        self._sock.bind((0, RTMGRP_IPV4_ROUTE))
        self._sock.setsockopt(rtnl.socket.SOL_SOCKET, rtnl.SO_RCVBUFFORCE, 8 << 20)
        self._sock.settimeout(0.5)
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                data = self._sock.recv(1 << 20)
            except (TimeoutError, OSError):
                continue
            now = time.monotonic()
            for kind, _flags, _seq, payload in rtnl.messages(data):
                route = rtnl.route_of(payload) if kind == rtnl.RTM_NEWROUTE else None
                if route is not None:
                    self.seen.setdefault(route.dst, now)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self._sock.close()
