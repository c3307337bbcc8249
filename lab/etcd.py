"""etcd for the labs and the tests (Debian's etcd 3.4): the one place etcd is launched.

A :class:`Member` is one etcd process, on loopback or inside a network namespace (started
with ``ip netns exec``, which execs, so the recorded PID is etcd's own), plain or serving
clients over TLS (optionally demanding client certificates) with a PKI it generates. Its
data directory survives :meth:`Member.stop`, so a stopped member restarts with its data.
A :class:`Cluster` is 1..3 (or 5) members with one ``--initial-cluster``; start them all,
then wait until every one answers ``endpoint health``.

Both are :class:`EtcdCtl`: ``etcdctl`` (API v3) against their endpoints, run where they can
be reached (inside the first member's namespace), with ``get_prefix``, ``lease_of`` and
``revision`` on top. Processes are stopped by recorded PID only (see ``procs``).
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import procs
from .netns import exec_argv
from .state import LabError
from .tls import Pki, make_pki

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
CLIENT_PORT = 2379
PEER_PORT = 2380
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Auth:
    """etcd auth as the labs set it up: ``root`` (for etcdctl), and *user* with a role
    of the same name granted readwrite on *prefix* only. Passwords go to etcdctl through
    its environment and stdin, never its argv."""

    root_password: str = field(repr=False)
    user: str = "flannel"
    password: str = field(default="", repr=False)
    prefix: str = "/coreos.com/network"

    @classmethod
    def generate(cls, prefix: str = "/coreos.com/network", user: str = "flannel") -> Auth:
        return cls(secrets.token_urlsafe(18), user, secrets.token_urlsafe(18), prefix)


@dataclass(frozen=True)
class Tls:
    """How a member serves clients: over TLS with *pki*'s server certificate; with
    *client_cert_auth*, only to clients with a certificate of the same CA."""

    pki: Pki
    client_cert_auth: bool = False


class EtcdCtl:
    """``etcdctl`` (API v3) against :meth:`ctl_endpoints`, run inside :meth:`ctl_netns`."""

    def ctl_endpoints(self) -> list[str]:
        raise NotImplementedError

    def ctl_netns(self) -> str | None:
        raise NotImplementedError

    def ctl_tls(self) -> Tls | None:
        raise NotImplementedError

    def ctl_auth(self) -> Auth | None:
        """Once auth is enabled, etcdctl runs as root (``ETCDCTL_USER``, not argv)."""
        return getattr(self, "auth", None)

    def ctl_env(self) -> dict[str, str]:
        env = dict(procs.CLEAN_ENV, ETCDCTL_API="3")
        auth = self.ctl_auth()
        if auth is not None:
            env["ETCDCTL_USER"] = f"root:{auth.root_password}"
        return env

    def ctl_argv(self, args: Sequence[str], dial: float = 2.0, command: float = 5.0) -> list[str]:
        argv = [ETCDCTL, f"--endpoints={','.join(self.ctl_endpoints())}",
                f"--dial-timeout={dial:g}s", f"--command-timeout={command:g}s"]
        how = self.ctl_tls()
        if how is not None:
            argv.append(f"--cacert={how.pki.ca}")
            if how.client_cert_auth:
                argv += [f"--cert={how.pki.client_cert}", f"--key={how.pki.client_key}"]
        argv += list(args)
        ns = self.ctl_netns()
        return exec_argv(ns, argv) if ns else argv

    def run(self, *args: str, check: bool = True, timeout: float = 30.0,
            dial: float = 2.0, command: float = 5.0, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.ctl_argv(args, dial, command), capture_output=True, text=True, check=False,
                              env=self.ctl_env(), timeout=timeout, input=stdin)
        if check and proc.returncode != 0:
            raise LabError(f"etcdctl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def etcdctl(self, *args: str) -> str:
        """stdout of ``etcdctl args...``; a failure raises :class:`LabError`."""
        return self.run(*args).stdout

    def etcdctl_v2(self, *args: str, timeout: float = 30.0) -> str:
        """``ETCDCTL_API=2 etcdctl args...`` (``set KEY VALUE [--ttl N]``, ``ls``, ``get``): the
        classic set-up's etcd v2 API; the member must serve it (``enable_v2``). Its own
        flags (v2 etcdctl has no dial or command timeout); no auth (v2 auth is v2's own)."""
        argv = [ETCDCTL, f"--endpoints={','.join(self.ctl_endpoints())}"]
        how = self.ctl_tls()
        if how is not None:
            argv.append(f"--ca-file={how.pki.ca}")
            if how.client_cert_auth:
                argv += [f"--cert-file={how.pki.client_cert}", f"--key-file={how.pki.client_key}"]
        argv += list(args)
        ns = self.ctl_netns()
        proc = subprocess.run(exec_argv(ns, argv) if ns else argv, capture_output=True, text=True, check=False,
                              env=dict(procs.CLEAN_ENV, ETCDCTL_API="2"), timeout=timeout)
        if proc.returncode != 0:
            raise LabError(f"etcdctl (v2) {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def healthy(self, timeout: float = 1.0) -> tuple[bool, str]:
        """``endpoint health`` of every endpoint: (all healthy, what etcdctl said)."""
        proc = self.run("endpoint", "health", check=False, dial=timeout, command=timeout, timeout=timeout + 30)
        return proc.returncode == 0, (proc.stdout + proc.stderr).strip()

    def get_prefix(self, prefix: str) -> dict[str, str]:
        """key -> value of every key under *prefix*."""
        lines = self.etcdctl("get", "--prefix", prefix).splitlines()
        return dict(zip(lines[0::2], lines[1::2], strict=True))

    def lease_of(self, key: str) -> int:
        """The etcd lease id attached to *key* (0: none, -1: no such key)."""
        kvs = json.loads(self.etcdctl("get", key, "-w", "json")).get("kvs") or []
        return int(kvs[0].get("lease", 0)) if kvs else -1

    def revision(self) -> int:
        return int(json.loads(self.etcdctl("get", "/", "-w", "json"))["header"]["revision"])

    def add_user(self, user: str, password: str) -> None:
        """``user add`` with the password on stdin (``--interactive=false``)."""
        self.run("user", "add", user, "--interactive=false", stdin=f"{password}\n")

    def set_up_auth(self, auth: Auth) -> None:
        """Users, the prefix-only role, then ``auth enable``; afterwards this etcdctl
        runs as root. Idempotent only before ``auth enable`` (run it once per cluster)."""
        self.add_user("root", auth.root_password)
        self.add_user(auth.user, auth.password)
        self.etcdctl("role", "add", auth.user)
        self.etcdctl("role", "grant-permission", auth.user, "--prefix=true", "readwrite", auth.prefix)
        self.etcdctl("user", "grant-role", auth.user, auth.user)
        self.etcdctl("auth", "enable")
        self.remember_auth(auth)

    def remember_auth(self, auth: Auth) -> None:
        """From now on etcdctl authenticates as root (e.g. a lab reloaded from its state)."""
        raise NotImplementedError


@dataclass(eq=False)
class Member(EtcdCtl):
    """One etcd member. *loopback_client*: also serve clients on 127.0.0.1 of its namespace."""

    name: str
    address: str
    data_dir: Path
    log: Path
    netns: str | None = None
    client_port: int = CLIENT_PORT
    peer_port: int = PEER_PORT
    loopback_client: bool = False
    tls: Tls | None = None
    record: dict[str, Any] | None = field(default=None)  # the running process (pid, start time)
    auth: Auth | None = None  # set once auth is enabled on the cluster (etcdctl then runs as root)
    auth_token_ttl: int | None = None  # etcd's --auth-token-ttl (seconds; etcd's default 300)
    # peers over https with self-signed certificates (--peer-auto-tls): no plain http at all
    peer_tls: bool = False
    enable_v2: bool = False  # also serve the v2 API (/v2/keys): a cluster set up the classic way

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.address}:{self.client_port}"

    endpoint = client_url

    @property
    def peer_url(self) -> str:
        return f"{'https' if self.peer_tls else 'http'}://{self.address}:{self.peer_port}"

    def ctl_endpoints(self) -> list[str]:
        return [self.client_url]

    def ctl_netns(self) -> str | None:
        return self.netns

    def ctl_tls(self) -> Tls | None:
        return self.tls

    def remember_auth(self, auth: Auth) -> None:
        self.auth = auth

    def argv(self, cluster: Sequence[Member], token: str, log_level: str = "info") -> list[str]:
        """The etcd command line; ``--initial-*`` flags are ignored by etcd once the data
        directory exists, so the same argv restarts a stopped member."""
        listen = self.client_url
        if self.loopback_client and self.address != LOOPBACK:
            listen += f",{self.scheme}://{LOOPBACK}:{self.client_port}"
        argv = [
            ETCD, "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", listen, "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", ",".join(f"{m.name}={m.peer_url}" for m in cluster),
            "--initial-cluster-state", "new", "--initial-cluster-token", token,
            "--logger", "zap", "--log-outputs", "stderr", "--log-level", log_level,
        ]
        if self.auth_token_ttl is not None:
            argv += ["--auth-token-ttl", str(self.auth_token_ttl)]
        if self.peer_tls:
            argv.append("--peer-auto-tls")
        if self.enable_v2:
            argv.append("--enable-v2")
        if self.tls:
            argv += ["--cert-file", str(self.tls.pki.cert), "--key-file", str(self.tls.pki.key)]
            if self.tls.client_cert_auth:
                argv += ["--client-cert-auth", "--trusted-ca-file", str(self.tls.pki.ca)]
        return argv

    def start(self, cluster: Sequence[Member], token: str, log_level: str = "info") -> dict[str, Any]:
        """Start the process (it does not wait for it to be ready); return its record."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        argv = self.argv(cluster, token, log_level)
        self.record = procs.spawn(exec_argv(self.netns, argv) if self.netns else argv, self.log)
        return self.record

    def running(self) -> bool:
        return procs.alive(self.record)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by PID (SIGKILL after *timeout*); the data directory stays."""
        if self.record:
            procs.kill_all([self.record], timeout=timeout)
        self.record = None

    def tail(self, lines: int = 15) -> str:
        try:
            return "".join(self.log.read_text(errors="replace").splitlines(True)[-lines:])
        except OSError:
            return "(no log)"


def member(name: str, address: str, base_dir: Path, netns: str | None = None, **options: Any) -> Member:
    """A member whose data and log live under ``<base_dir>/<name>/``."""
    return Member(name, address, base_dir / name / "data", base_dir / name / "etcd.log", netns, **options)


def _tls(base: Path, mode: str, addresses: Sequence[str]) -> Tls | None:
    """None for ``plain``; else a PKI under *base* whose server certificate names *addresses*."""
    if mode not in ("plain", "tls", "mtls"):
        raise LabError(f"unknown TLS mode {mode!r}: plain, tls or mtls")
    if mode == "plain":
        return None
    return Tls(make_pki(base / "pki", addresses), client_cert_auth=mode == "mtls")


class Cluster(EtcdCtl):
    """Members started together (``--initial-cluster`` names them all); etcdctl runs
    against every member, inside the first one's namespace."""

    def __init__(self, members: Sequence[Member], token: str | None = None, log_level: str = "info",
                 owned_dir: Path | None = None) -> None:
        if not members:
            raise LabError("an etcd cluster needs at least one member")
        self.members = list(members)
        self.token = token or f"oflx-{secrets.token_hex(3)}"
        self.log_level = log_level
        self.owned_dir = owned_dir  # removed by close()

    @classmethod
    def loopback(cls, tls_mode: str = "plain", log_level: str = "error",
                 auth_token_ttl: int | None = None, enable_v2: bool = False) -> Cluster:
        """One member on 127.0.0.1 (free ports), in a temporary directory. *tls_mode*:
        ``plain``, ``tls`` (https) or ``mtls`` (https, client certificates required).
        Auth is enabled afterwards, on the running cluster: :meth:`set_up_auth`.
        *enable_v2*: the v2 API too (:meth:`etcdctl_v2`)."""
        base = Path(tempfile.mkdtemp(prefix="oflt-etcd-"))
        how = _tls(base, tls_mode, [LOOPBACK])
        one = member("t", LOOPBACK, base, client_port=free_port(), peer_port=free_port(), tls=how,
                     auth_token_ttl=auth_token_ttl, enable_v2=enable_v2)
        return cls([one], log_level=log_level, owned_dir=base)

    @classmethod
    def in_netns(cls, netns: str, addresses: Sequence[str], names: Sequence[str] | None = None,
                 log_level: str = "error", tls_mode: str = "plain", auth_token_ttl: int | None = None) -> Cluster:
        """Members inside namespace *netns*, one per address (each must exist there), in a
        temporary directory; *tls_mode* and *auth_token_ttl* as for :meth:`loopback`."""
        base = Path(tempfile.mkdtemp(prefix="oflx-etcd-"))
        how = _tls(base, tls_mode, addresses)
        names = list(names or (f"etcd{i}" for i in range(1, len(addresses) + 1)))
        members = [member(name, address, base, netns, tls=how, auth_token_ttl=auth_token_ttl)
                   for name, address in zip(names, addresses, strict=True)]
        return cls(members, log_level=log_level, owned_dir=base)

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    @property
    def endpoint(self) -> str:
        """The client URLs, comma separated (what ``--etcd-endpoints`` takes)."""
        return ",".join(self.endpoints)

    @property
    def pki(self) -> Pki | None:
        first = self.members[0].tls
        return first.pki if first else None

    def requests_received(self) -> int:
        """gRPC request messages the members have received so far (etcd's own
        ``grpc_server_msg_received_total``, summed over methods; a keep-alive on a stream
        counts as one): what a client costs etcd. Plain members on loopback only."""
        from prometheus_client.parser import text_string_to_metric_families  # the one exposition parser

        total = 0.0
        for m in self.members:
            if m.netns is not None or m.tls is not None:
                raise LabError("requests_received reads /metrics of plain loopback members only")
            with urllib.request.urlopen(f"{m.client_url}/metrics", timeout=5) as reply:  # noqa: S310 (our own member)
                text = reply.read().decode()
            total += sum(sample.value for family in text_string_to_metric_families(text)
                         for sample in family.samples if sample.name == "grpc_server_msg_received_total")
        return int(total)

    def ctl_endpoints(self) -> list[str]:
        return self.endpoints

    def ctl_netns(self) -> str | None:
        return self.members[0].netns

    def ctl_tls(self) -> Tls | None:
        return self.members[0].tls

    def ctl_auth(self) -> Auth | None:
        return self.members[0].auth

    def remember_auth(self, auth: Auth) -> None:
        for m in self.members:
            m.auth = auth

    def start_member(self, m: Member) -> dict[str, Any]:
        """Start *m* (not waiting) unless it runs; return its process record."""
        if not m.running():
            m.start(self.members, self.token, self.log_level)
        assert m.record is not None
        return m.record

    def start(self, wait: bool = True, timeout: float = 30.0) -> Cluster:
        for m in self.members:
            self.start_member(m)
        if wait:
            self.wait_healthy(timeout=timeout)
        return self

    def wait_healthy(self, only: Sequence[Member] | None = None, timeout: float = 30.0) -> None:
        """Wait until every member in *only* (default: all) answers ``endpoint health``.
        Fails early, with the end of its log, when a member's process has exited."""
        check = list(only if only is not None else self.members)
        group = Cluster(check, self.token, self.log_level)  # members carry tls and auth
        deadline = time.monotonic() + timeout
        while True:
            for m in check:
                if not m.running():
                    raise LabError(f"etcd member {m.name} exited while starting; its log "
                                   f"{m.log} ends with:\n{m.tail()}")
            ok, last = group.healthy()
            if ok:
                return
            if time.monotonic() >= deadline:
                raise LabError(f"etcd {group.endpoints} not healthy after {timeout:.0f}s: {last}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every member by PID; the data stays (``start`` brings them back)."""
        for m in self.members:
            m.stop(timeout)

    def close(self) -> None:
        """Stop every member and remove the temporary directory, if this cluster made it."""
        self.stop()
        if self.owned_dir is not None:
            shutil.rmtree(self.owned_dir, ignore_errors=True)
