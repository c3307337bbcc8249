"""The udp backend tests' rig and driver protocol.

The rig (``lab.rig.Rig``, namespaces oflu-<tag>-*): the underlay switch (ul), hosts (h1..),
containers (c1..) and a non-peer (x). Nothing is added to the root namespace. Underlay
192.168.81.0/24 (host i = .10+i, outsider .99); overlay 10.7.0.0/16, host i leases 10.7.i.0/24,
its docker0 is 10.7.i.1 and its container 10.7.i.2. Each host's backend is a udp_driver.py
process, talked to over stdin/stdout (:class:`Agent`).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import netns
from lab.rig import Rig

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python")
if not Path(PYTHON).exists():
    PYTHON = sys.executable
DRIVER = str(HERE / "udp_driver.py")
NETWORK = "10.7.0.0/16"
OUTSIDER_OFFSET = 99


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


class Drivers(dict[int, Agent]):
    """The udp driver of each host of one rig, by host number; stopped with the rig."""

    def __init__(self, rig: Rig) -> None:
        super().__init__()
        self.rig = rig
        rig.defer(self.stop_all)

    def start(self, i: int, *, plain: bool = False, state_file: str | None = None) -> Agent:
        argv = [PYTHON, DRIVER, "--network", NETWORK, "--subnet", subnet(i), "--public-ip", underlay_ip(i)]
        if plain:
            argv.append("--plain")
        if state_file:
            argv += ["--state-file", state_file]
        proc = self.rig.popen(self.rig.ns(f"h{i}"), *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
        agent = Agent(i, proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            agent.stop()
            raise RuntimeError(f"agent on host {i} did not start: {agent.error}")
        agent.setup = json.loads(line)["setup"]
        self[i] = agent
        return agent

    def stop_all(self) -> None:
        for agent in self.values():
            agent.stop()


def build(rig: Rig, hosts: int) -> Rig:
    """Hosts h1..h<hosts> with a container each (overlay MTU: the underlay's less 28), and
    an outsider x on the underlay that is nobody's peer."""
    rig.docker_hosts(hosts, NETWORK, container_mtu=rig.mtu - 28)
    rig.node("x", OUTSIDER_OFFSET, port="ux")
    return rig


def ping(rig: Rig, src: int, dst_ip: str, count: int = 3) -> bool:
    """From container *src*: *count* pings 0.2 s apart; True when one is answered."""
    return netns.ping(rig.ns(f"c{src}"), dst_ip, count=count, wait=2, interval=0.2)


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
    netns.run(ns, [PYTHON, "-c", code])
