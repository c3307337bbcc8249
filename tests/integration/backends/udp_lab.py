"""Namespaces for the udp backend tests and benchmark: hosts on an underlay bridge, each with a
docker0-like bridge and one container namespace, plus an outsider on the underlay.

Everything lives in namespaces named oflu-<tag>-*: the underlay switch (ul), hosts (h1..),
containers (c1..) and a non-peer (x). Nothing is added to the root namespace. Underlay
192.168.81.0/24 (host i = .10+i, outsider .99); overlay 10.7.0.0/16, host i leases 10.7.i.0/24,
its docker0 is 10.7.i.1 and its container 10.7.i.2.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.namespaces import Namespaces, ip

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python")
if not Path(PYTHON).exists():
    PYTHON = sys.executable
DRIVER = str(HERE / "udp_driver.py")
NETWORK = "10.7.0.0/16"


def underlay_ip(i: int) -> str:
    return f"192.168.81.{10 + i}"


def subnet(i: int) -> str:
    return f"10.7.{i}.0/24"


def container_ip(i: int) -> str:
    return f"10.7.{i}.2"


@dataclass
class Agent:
    """One udp_driver.py process (a host's backend), talked to over stdin/stdout."""

    host: int
    proc: subprocess.Popen[str]
    setup: dict[str, Any] = field(default_factory=dict)
    _stderr: str = ""

    def command(self, op: str, **kwargs: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError(f"agent on host {self.host} died: {self.error}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"agent on host {self.host}: {reply}")
        return reply

    def stats(self) -> dict[str, Any]:
        return self.command("stats")["stats"]

    def peer(self, host: int, fast: bool) -> dict[str, Any]:
        return {"subnet": subnet(host), "public_ip": underlay_ip(host), "fast": fast}

    @property
    def error(self) -> str:
        return f"exit code {self.proc.returncode}, stderr: {self._stderr.strip() or '(empty)'}"

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        if self.proc.stderr and not self.proc.stderr.closed:
            self._stderr = self.proc.stderr.read()
        return self._stderr

    def stop(self) -> int:
        """SIGTERM by PID, wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.stderr()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe:
                try:
                    pipe.close()
                except OSError:
                    pass
        return self.proc.returncode


class Lab:
    def __init__(self, hosts: int = 3, underlay_mtu: int = 1500, tag: str | None = None) -> None:
        self.tag = tag or f"{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.prefix = f"oflu-{self.tag}"
        self.hosts = hosts
        self.underlay_mtu = underlay_mtu
        self.overlay_mtu = underlay_mtu - 28
        self.namespaces = Namespaces()
        self.agents: dict[int, Agent] = {}
        self.procs: list[subprocess.Popen[str]] = []

    def ns(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    def h(self, i: int) -> str:
        return self.ns(f"h{i}")

    def c(self, i: int) -> str:
        return self.ns(f"c{i}")

    def build(self) -> Lab:
        ul = self.ns("ul")
        self.namespaces.add(ul)
        ip("-n", ul, "link", "add", "br0", "type", "bridge")
        ip("-n", ul, "link", "set", "br0", "up")
        for i in range(1, self.hosts + 1):
            self._underlay_port(self.h(i), f"u{i}", underlay_ip(i))
            h, c = self.h(i), self.c(i)
            ip("netns", "exec", h, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            ip("-n", h, "link", "add", "docker0", "type", "bridge")
            ip("-n", h, "addr", "add", f"10.7.{i}.1/24", "dev", "docker0")
            ip("-n", h, "link", "set", "docker0", "up")
            self.namespaces.add(c)
            ip("-n", c, "link", "add", "eth0", "mtu", str(self.overlay_mtu), "type", "veth",
               "peer", "name", "veth0", "netns", h)
            ip("-n", h, "link", "set", "veth0", "mtu", str(self.overlay_mtu), "master", "docker0", "up")
            ip("-n", c, "addr", "add", f"{container_ip(i)}/24", "dev", "eth0")
            ip("-n", c, "link", "set", "eth0", "up")
            ip("-n", c, "route", "add", "default", "via", f"10.7.{i}.1")
        self._underlay_port(self.ns("x"), "ux", "192.168.81.99")
        return self

    def _underlay_port(self, ns: str, port: str, address: str) -> None:
        ul = self.ns("ul")
        self.namespaces.add(ns)
        mtu = str(self.underlay_mtu)
        ip("-n", ns, "link", "add", "eth0", "mtu", mtu, "type", "veth", "peer", "name", port, "netns", ul)
        ip("-n", ul, "link", "set", port, "mtu", mtu, "master", "br0", "up")
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")

    # --- agents --------------------------------------------------------------------------

    def start_agent(self, i: int, *, plain: bool = False, state_file: str | None = None,
                    timeout: float = 20) -> Agent:
        argv = ["ip", "netns", "exec", self.h(i), PYTHON, DRIVER, "--network", NETWORK, "--subnet", subnet(i),
                "--public-ip", underlay_ip(i)]
        if plain:
            argv.append("--plain")
        if state_file:
            argv += ["--state-file", state_file]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        self.procs.append(proc)
        agent = Agent(i, proc)
        deadline = time.monotonic() + timeout
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line or time.monotonic() > deadline:
            agent.stop()
            raise RuntimeError(f"agent on host {i} did not start: {agent.error}")
        agent.setup = json.loads(line)["setup"]
        self.agents[i] = agent
        return agent

    def popen(self, ns: str, *argv: str, **kwargs: Any) -> subprocess.Popen[str]:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], text=True, **kwargs)
        self.procs.append(proc)
        return proc

    def run(self, ns: str, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return ip("netns", "exec", ns, *argv, check=check, timeout=timeout)

    def ping(self, src: int, dst_ip: str, count: int = 3) -> bool:
        proc = self.run(self.c(src), "ping", "-c", str(count), "-i", "0.2", "-W", "2", dst_ip, check=False)
        return proc.returncode == 0

    def destroy(self) -> None:
        """Stop every process we started (by PID), delete every namespace we created."""
        for agent in self.agents.values():
            agent.stop()
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        self.namespaces.delete_all()


def set_gso_ipv4_max_size(ns: str, ifname: str, size: int) -> None:
    """IFLA_GSO_IPV4_MAX_SIZE (kernel >= 6.3; iproute2 6.1 cannot set it) over raw rtnetlink."""
    code = f"""
import socket, struct
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
idx = socket.if_nametoindex({ifname!r})
def nla(t, v): return struct.pack('HH', 8, t) + struct.pack('I', v)
body = struct.pack('BxHiII', 0, 0, idx, 0, 0) + nla(41, {size}) + nla(63, {size})
msg = struct.pack('IHHII', 16 + len(body), 16, 0x1 | 0x4, 1, 0) + body
s.send(msg)
err, = struct.unpack_from('i', s.recv(4096), 16)
raise SystemExit(-err)
"""
    ip("netns", "exec", ns, PYTHON, "-c", code)
