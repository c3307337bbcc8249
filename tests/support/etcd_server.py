"""A real etcd (Debian's etcd-server) started by the tests, on loopback, killed by PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def terminate(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM by PID, SIGKILL after grace seconds; reaps the process."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EtcdProcess:
    """What the tests' etcds share: a temp data dir holding etcd.log, the process (stopped
    by PID), and the wait for it to be ready that reports the log when etcd exits."""

    def __init__(self, dir_prefix: str) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix=dir_prefix))
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: list[str]) -> None:
        with open(self.data_dir / "etcd.log", "ab") as log:  # the child has its own copy
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)

    def _wait(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited: {(self.data_dir / 'etcd.log').read_text()[-2000:]}")
            if ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"etcd did not {what}")

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


class EtcdServer(EtcdProcess):
    """One etcd member on 127.0.0.1. tls: dict with cert/key/ca paths to serve https."""

    def __init__(self, tls: dict[str, str] | None = None, client_cert_auth: bool = False) -> None:
        super().__init__("oflt-etcd-")
        self.tls = tls
        self.client_cert_auth = client_cert_auth
        self.port = free_port()
        self.peer_port = free_port()
        scheme = "https" if tls else "http"
        self.endpoint = f"{scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> EtcdServer:
        args = [
            ETCD, "--name", "t", "--data-dir", str(self.data_dir / "data"),
            "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", f"http://127.0.0.1:{self.peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_port}",
            "--initial-cluster", f"t=http://127.0.0.1:{self.peer_port}",
            "--log-level", "error", "--logger", "zap",
        ]
        if self.tls:
            args += ["--cert-file", self.tls["cert"], "--key-file", self.tls["key"]]
            if self.client_cert_auth:
                args += ["--client-cert-auth", "--trusted-ca-file", self.tls["ca"]]
        self._spawn(args)
        self._wait(self._listening, timeout, "start listening")
        time.sleep(0.2)
        return self

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def etcdctl(self, *args: str) -> str:
        env = dict(os.environ, ETCDCTL_API="3")
        cmd = ["etcdctl", f"--endpoints={self.endpoint}"]
        if self.tls:
            cmd += [f"--cacert={self.tls['ca']}"]
            if self.client_cert_auth:
                cmd += [f"--cert={self.tls['client_cert']}", f"--key={self.tls['client_key']}"]
        return subprocess.run(cmd + list(args), env=env, check=True, capture_output=True, text=True).stdout
