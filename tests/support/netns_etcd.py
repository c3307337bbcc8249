"""A real etcd running inside a network namespace, on an address that exists only there.

Lab tools that talk to it (etcdctl) run inside the namespace too; nothing is added to the
root namespace. Started with `ip netns exec` (which execs, so the PID is etcd's) and
stopped by that PID only. The data directory survives stop()/start(), so an outage can be
simulated and ended with the data intact. Several members on addresses of the same
namespace form a cluster (give each the same initial_cluster, start them with wait=False,
then wait_healthy()).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from support.etcd_server import ETCD, EtcdProcess

ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


class NetnsEtcd(EtcdProcess):
    def __init__(self, netns: str, address: str, port: int = 2379, name: str = "lab",
                 peer_url: str = "http://127.0.0.1:2380", initial_cluster: str | None = None) -> None:
        super().__init__("oflag-etcd-")
        self.netns = netns
        self.address = address
        self.port = port
        self.endpoint = f"http://{address}:{port}"
        self.name = name
        self.peer_url = peer_url
        self.initial_cluster = initial_cluster or f"{name}={peer_url}"

    def start(self, timeout: float = 20.0, wait: bool = True) -> NetnsEtcd:
        args = [
            "ip", "netns", "exec", self.netns, ETCD, "--name", self.name, "--data-dir", str(self.data_dir / "data"),
            "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster, "--log-level", "error", "--logger", "zap",
        ]
        self._spawn(args)
        return self.wait_healthy(timeout) if wait else self

    def wait_healthy(self, timeout: float = 20.0) -> NetnsEtcd:
        self._wait(lambda: self.run("endpoint", "health", check=False).returncode == 0, timeout, "become healthy")
        return self

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = ["ip", "netns", "exec", self.netns, ETCDCTL, f"--endpoints={self.endpoint}",
               "--dial-timeout=2s", "--command-timeout=5s", *args]
        return subprocess.run(cmd, env=dict(os.environ, ETCDCTL_API="3"), check=check,
                              capture_output=True, text=True, timeout=30)

    def etcdctl(self, *args: str) -> str:
        return self.run(*args).stdout

    def get_prefix(self, prefix: str) -> dict[str, str]:
        """key -> value of every key under prefix."""
        lines = self.etcdctl("get", "--prefix", prefix).splitlines()
        return dict(zip(lines[0::2], lines[1::2], strict=True))

    def lease_of(self, key: str) -> int:
        """The etcd lease id attached to key (0: none, -1: no such key)."""
        kvs = json.loads(self.etcdctl("get", key, "-w", "json")).get("kvs") or []
        return int(kvs[0].get("lease", 0)) if kvs else -1

    def revision(self) -> int:
        return int(json.loads(self.etcdctl("get", "/", "-w", "json"))["header"]["revision"])
