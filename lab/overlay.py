"""The overlay on a light lab: the real agent (``bin/flannel-agent``) on every host.

Each agent runs inside its host's namespaces (``Lab.popen``, so ``/run`` is the host's own)
against the lab's etcd; containers are namespaces bridged to the host's ``docker0``,
addressed from the host's ``FLANNEL_SUBNET``. What the overlay tests and the benchmark
drive: the network config and leases in etcd, the agents (stopped by PID), containers and
traffic between them, and the data plane as the kernel sees it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import netns, procs
from .core import Lab
from .engine import parse_env_text
from .ping_watch import sent_and_received
from .state import REPO, LabError
from .wait import wait_for

AGENT = REPO / "bin" / "flannel-agent"
PREFIX = "/coreos.com/network"
HEALTHZ_PORT = 9471


class Overlay:
    """Agents of one backend (*backend*: the config's ``Backend``) on the hosts of *lab*;
    their logs go to *logs*."""

    def __init__(self, lab: Lab, backend: dict[str, Any], logs: Path) -> None:
        self.lab = lab
        self.backend = backend
        self.logs = logs
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.containers: dict[str, str] = {}  # container name -> address (no prefix length)

    @property
    def kind(self) -> str:
        return str(self.backend["Type"])

    # --- etcd ----------------------------------------------------------------------------

    def put_config(self, network: str = "10.5.0.0/16") -> None:
        self.lab.etcdctl("put", f"{PREFIX}/config", json.dumps({"Network": network, "Backend": self.backend}))

    def leases(self) -> dict[str, dict[str, Any]]:
        """subnet key (e.g. ``10.5.3.0-24``) -> lease JSON."""
        out = self.lab.etcdctl("get", "--prefix", f"{PREFIX}/subnets/")
        lines = out.splitlines()
        return {lines[i].rsplit("/", 1)[1]: json.loads(lines[i + 1]) for i in range(0, len(lines) - 1, 2)}

    def lease_of(self, host: str) -> tuple[str, dict[str, Any]]:
        ip = self.lab.host_address(host)
        for key, value in self.leases().items():
            if value["PublicIP"] == ip:
                return key, value
        raise LabError(f"no lease for {host} ({ip})")

    @classmethod
    @contextmanager
    def running(cls, lab: Lab, backend: dict[str, Any], logs: Path) -> Iterator[Overlay]:
        """The config in etcd, an agent and a container (``c<N>``) on every host; the agents
        are stopped afterwards, also after a failure."""
        overlay = cls(lab, backend, logs)
        try:
            overlay.put_config()
            for host in lab.hosts:
                overlay.start_agent(host)
            for host in lab.hosts:
                overlay.add_container(host, f"c{host[1:]}")
            yield overlay
        finally:
            overlay.stop_all()

    # --- agents --------------------------------------------------------------------------

    def start_agent(self, host: str, *extra: str) -> subprocess.Popen[bytes]:
        """Start the agent on *host*; return once it has (re)written its subnet file."""
        env_file = self.subnet_env(host)
        started_at = env_file.stat().st_mtime if env_file.exists() else 0.0
        flags, env = self.etcd_security()
        argv = [sys.executable, str(AGENT), f"--etcd-endpoints={','.join(self.lab.etcd_endpoints)}", *flags,
                "--iface=eth0", "--reconcile-interval=1", "--etcd-probe-interval=1",
                f"--healthz-port={HEALTHZ_PORT}", *extra]
        with open(self.logs / f"agent-{host}.log", "ab") as log:  # the child has its own copy
            proc = self.lab.popen(host, argv, stdout=log, stderr=log, env=env)
        self.agents[host] = proc
        wait_for(lambda: env_file.exists() and env_file.stat().st_mtime >= started_at and proc.poll() is None,
                 30, what=f"agent on {host} writing its subnet file")
        # A restarted agent leaves an unchanged subnet file alone, so the file alone does not say it is up:
        # /readyz does, once the first listing of the leases is programmed.
        wait_for(lambda: proc.poll() is None and self.healthz(host, "/readyz")[0] == 200, 30,
                 what=f"agent on {host} ready", interval=0.2)
        return proc

    def etcd_security(self) -> tuple[list[str], dict[str, str]]:
        """The agent's flags for the lab's etcd (``--tls``: the lab's CA and client certificate),
        and its environment (``--auth``: the password as ``FLANNELD_ETCD_PASSWORD``, never argv)."""
        flags: list[str] = []
        env = dict(os.environ)
        tls = self.lab.etcd_tls
        if tls is not None:
            flags += [f"--etcd-cafile={tls.pki.ca}", f"--etcd-certfile={tls.pki.client_cert}",
                      f"--etcd-keyfile={tls.pki.client_key}"]
        auth = self.lab.etcd_auth
        if auth is not None:
            flags.append(f"--etcd-username={auth.user}")
            env["FLANNELD_ETCD_PASSWORD"] = auth.password
        return flags, env

    def agent_pid(self, host: str) -> int:
        """The agent's own PID: nsenter (the Popen) forks it into the host's PID namespace."""
        nsenter = self.agents[host].pid
        children = procs.children(nsenter)
        if len(children) != 1:
            raise LabError(f"nsenter {nsenter} has children {children}, not one agent")
        return children[0]

    def kill_agent(self, host: str, sig: int = signal.SIGKILL) -> int:
        """Signal the agent by PID and return its exit status (as nsenter reports it)."""
        os.kill(self.agent_pid(host), sig)
        proc = self.agents.pop(host)
        return proc.wait(15)

    def stop_all(self) -> None:
        """SIGTERM every agent (its data plane stays); SIGKILL one that does not go."""
        for host in list(self.agents):
            if self.agents[host].poll() is not None:
                self.agents.pop(host)
                continue
            try:
                self.kill_agent(host, signal.SIGTERM)
            except (subprocess.TimeoutExpired, LabError, OSError):
                proc = self.agents.pop(host, None)
                if proc is not None:
                    proc.kill()
                    proc.wait()

    def subnet_env(self, host: str) -> Path:
        return self.lab.host_run_dir(host) / "flannel" / "subnet.env"

    def flannel_subnet(self, host: str) -> str:
        return parse_env_text(self.subnet_env(host).read_text())["FLANNEL_SUBNET"]

    def healthz(self, host: str, path: str) -> tuple[int, str]:
        """GET *path* from the agent's healthz server on *host*: (status, body); status 0 when nothing answers."""
        reply = netns.http_get(self.lab.host_ns(host), f"http://127.0.0.1:{HEALTHZ_PORT}{path}")
        return reply.status, reply.body

    def stats(self, host: str) -> dict[str, Any]:
        """The agent's /stats: its peers, what it turned away and why, the backend's counters."""
        status, body = self.healthz(host, "/stats")
        assert status == 200, f"/stats on {host}: {status} {body}"
        return dict(json.loads(body))

    # --- containers and traffic ----------------------------------------------------------

    def add_container(self, host: str, name: str) -> str:
        """Container *name* on *host* (next free address of its lease); its address."""
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
        """Packets a ping stream sent but got no answer for (waits for it to end)."""
        out, _unused = stream.communicate(timeout=timeout)
        counts = sent_and_received(out)
        if counts is None:
            raise LabError(f"no ping summary in: {out}")
        return counts[0] - counts[1]

    # --- the data plane as the kernel sees it --------------------------------------------

    def ip(self, host: str, *args: str) -> str:
        return str(self.lab.run(host, ["ip", *args], capture_output=True, text=True).stdout)

    def routes_to(self, host: str, subnet: str) -> str:
        return self.ip(host, "-4", "route", "show", subnet)
