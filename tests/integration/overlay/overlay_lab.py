"""A light lab with the real agent on every host: what the overlay scenario tests drive.

Each host runs `bin/flannel-agent` inside the host's namespaces (lab.popen, so /run is the
host's own); containers are namespaces bridged to the host's docker0, addressed from the
host's FLANNEL_SUBNET. Everything is removed by Lab.down(); agents are killed by PID.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lab import Lab

REPO = Path(__file__).resolve().parents[3]
AGENT = REPO / "bin" / "flannel-agent"
PREFIX = "/coreos.com/network"
HEALTHZ_PORT = 9471
# Sends `count` datagrams holding an ICMP echo request (flannel's udp format: a bare IP
# packet) from this namespace to the udp port of a host; argv: src dst host port count.
_ECHO_SENDER = """
import socket, struct, sys
src, dst, host, port, count = sys.argv[1:6]
def csum(data):
    data += b"\\0" * (len(data) % 2)
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
icmp = struct.pack("!BBHHH", 8, 0, 0, 0x4F4C, 1) + b"stranger"
icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0,
                   socket.inet_aton(src), socket.inet_aton(dst))
head = head[:10] + struct.pack("!H", csum(head)) + head[12:]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _i in range(int(count)):
    sock.sendto(head + icmp, (host, int(port)))
"""


def wait_for(check: Callable[[], object], timeout: float, interval: float = 0.05, what: str = "condition") -> float:
    """Poll until check() is truthy; return the seconds it took."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(interval)


class OverlayLab:
    def __init__(self, lab: Lab, backend: dict, logs: Path) -> None:
        self.lab = lab
        self.backend = backend
        self.logs = logs
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.containers: dict[str, str] = {}  # container name -> address (no prefix length)

    # --- etcd ------------------------------------------------------------------------

    def put_config(self, network: str = "10.5.0.0/16") -> None:
        self.lab.etcdctl("put", f"{PREFIX}/config", json.dumps({"Network": network, "Backend": self.backend}))

    def leases(self) -> dict[str, dict]:
        out = self.lab.etcdctl("get", "--prefix", f"{PREFIX}/subnets/")
        lines = out.splitlines()
        return {lines[i].rsplit("/", 1)[1]: json.loads(lines[i + 1]) for i in range(0, len(lines) - 1, 2)}

    def lease_of(self, host: str) -> tuple[str, dict]:
        ip = self.lab.host_address(host)
        for key, value in self.leases().items():
            if value["PublicIP"] == ip:
                return key, value
        raise AssertionError(f"no lease for {host} ({ip})")

    # --- agents ------------------------------------------------------------------------

    def start_agent(self, host: str, *extra: str) -> subprocess.Popen[bytes]:
        env_file = self.subnet_env(host)
        started_at = env_file.stat().st_mtime if env_file.exists() else 0.0
        log = open(self.logs / f"agent-{host}.log", "ab")  # noqa: SIM115 - closed with the process
        argv = [sys.executable, str(AGENT), f"--etcd-endpoints={','.join(self.lab.etcd_endpoints)}",
                "--iface=eth0", "--reconcile-interval=1", "--etcd-probe-interval=1",
                f"--healthz-port={HEALTHZ_PORT}", *extra]
        proc = self.lab.popen(host, argv, stdout=log, stderr=log)
        self.agents[host] = proc
        wait_for(lambda: env_file.exists() and env_file.stat().st_mtime >= started_at and proc.poll() is None,
                 30, what=f"agent on {host} writing its subnet file")
        return proc

    def agent_pid(self, host: str) -> int:
        """The agent's own PID: nsenter (the Popen) forks it into the host's PID namespace."""
        nsenter = self.agents[host].pid
        children = Path(f"/proc/{nsenter}/task/{nsenter}/children").read_text().split()
        assert len(children) == 1, f"nsenter {nsenter} has children {children}"
        return int(children[0])

    def kill_agent(self, host: str, sig: int = signal.SIGKILL) -> int:
        """Signal the agent by PID and return its exit status (as nsenter reports it)."""
        os.kill(self.agent_pid(host), sig)
        proc = self.agents.pop(host)
        return proc.wait(15)

    def stop_all(self) -> None:
        for host in list(self.agents):
            if self.agents[host].poll() is None:
                try:
                    self.kill_agent(host, signal.SIGTERM)
                except (subprocess.TimeoutExpired, AssertionError, OSError):
                    proc = self.agents.pop(host, None)
                    if proc is not None:
                        proc.kill()
                        proc.wait()
            else:
                self.agents.pop(host)

    def agent_log(self, host: str) -> str:
        path = self.logs / f"agent-{host}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def subnet_env(self, host: str) -> Path:
        return self.lab.host_run_dir(host) / "flannel" / "subnet.env"

    def flannel_subnet(self, host: str) -> str:
        text = self.subnet_env(host).read_text()
        return re.search(r"^FLANNEL_SUBNET=(\S+)$", text, re.M).group(1)

    # --- containers and traffic ----------------------------------------------------------

    def add_container(self, host: str, name: str) -> str:
        record = self.lab.add_container(host, name, bridge_address=True)
        self.containers[name] = record["address"].split("/")[0]
        return self.containers[name]

    def ping(self, src: str, dst_ip: str, count: int = 1, wait: float = 1.0) -> bool:
        proc = self.lab.run(src, ["ping", "-n", "-q", "-c", str(count), "-W", str(wait), dst_ip], check=False,
                            capture_output=True)
        return proc.returncode == 0

    def ping_all(self) -> list[tuple[str, str]]:
        """Every container to every container on another host; the failing pairs."""
        failed = []
        for src in self.containers:
            for dst, ip in self.containers.items():
                if self.lab.container(src)["host"] != self.lab.container(dst)["host"] and not self.ping(src, ip):
                    failed.append((src, dst))
        return failed

    def start_ping_stream(self, src: str, dst_ip: str, seconds: float, interval: float = 0.1) -> subprocess.Popen[str]:
        count = int(seconds / interval)
        return self.lab.popen(src, ["ping", "-n", "-q", "-i", str(interval), "-W", "1", "-c", str(count), dst_ip],
                              netns_only=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    @staticmethod
    def lost(stream: subprocess.Popen[str], timeout: float) -> int:
        out, _unused = stream.communicate(timeout=timeout)
        match = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert match, out
        return int(match.group(1)) - int(match.group(2))

    # --- the data plane as the kernel sees it ------------------------------------------

    def ip(self, host: str, *args: str) -> str:
        return self.lab.run(host, ["ip", *args], capture_output=True, text=True).stdout

    def routes_to(self, host: str, subnet: str) -> str:
        return self.ip(host, "-4", "route", "show", subnet)

    # --- the udp backend -----------------------------------------------------------------

    def udp_stats(self, host: str) -> dict:
        """The udp forwarder's counters, from the agent's /stats endpoint."""
        code = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{HEALTHZ_PORT}/stats').read().decode())"
        out = self.lab.run(host, [sys.executable, "-c", code], capture_output=True, text=True).stdout
        return json.loads(out)

    def in_echos(self, container: str) -> int:
        """ICMP echo requests the container's stack has received (/proc/net/snmp)."""
        snmp = self.lab.run(container, ["cat", "/proc/net/snmp"], capture_output=True, text=True).stdout
        lines = [line.split() for line in snmp.splitlines() if line.startswith("Icmp:")]
        return int(lines[1][lines[0].index("InEchos")])

    def send_stranger_echoes(self, stranger: str, src: str, dst: str, host_ip: str, count: int = 5) -> None:
        self.lab.run(stranger, [sys.executable, "-c", _ECHO_SENDER, src, dst, host_ip, "8285", str(count)],
                     netns_only=True)
