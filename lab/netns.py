"""Network namespaces, veths and bridges, through the ``ip`` command (argv lists, no shell).

Safety rule, enforced here: every link/address/route command runs with ``ip -n <ns>``
inside a lab namespace. Nothing in this module can change the root namespace's links,
addresses or routes; the only root-level operations are ``ip netns add/del/list/pids``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from .state import LabError

IP = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "ip"
NETNS_DIR = Path("/run/netns")
LAB_TAG = "overlaynet-flannel-lab"
# A concurrent `ip netns add` briefly re-mounts /run/netns, and a namespace name can then
# fail to resolve for a moment: only that error is retried (the command did not run).
_NETNS_RACE = 'Invalid "netns" value'
_RACE_RETRIES = 5


def run_argv(argv: Sequence[str], *, stdin: str | None = None, check: bool = True,
             timeout: float | None = 60) -> subprocess.CompletedProcess[str]:
    """Run *argv* (an ``ip`` command line, or one under ``ip netns exec``); text output."""
    def once() -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=False,
                              timeout=timeout)

    proc = once()
    for _attempt in range(_RACE_RETRIES):
        if proc.returncode == 0 or _NETNS_RACE not in proc.stderr:
            break
        time.sleep(0.2)
        proc = once()
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        if stdin:
            detail += "\n  batch was:\n    " + stdin.strip().replace("\n", "\n    ")
        raise LabError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {detail}")
    return proc


def ip(ns: str, *args: str, check: bool = True) -> str:
    """Run ``ip -n <ns> args...``; *ns* is mandatory, so the root namespace is never touched."""
    if not ns:
        raise LabError("internal error: ip command without a namespace")
    return run_argv([IP, "-n", ns, *args], check=check).stdout


def ip_batch(ns: str, commands: Iterable[str]) -> None:
    """Run several ``ip`` commands (one string each, no ``ip`` word) in namespace *ns*."""
    text = "".join(f"{c}\n" for c in commands)
    if text:
        run_argv([IP, "-n", ns, "-batch", "-"], stdin=text)


def exec_argv(ns: str, argv: Sequence[str]) -> list[str]:
    """``ip netns exec <ns> argv...``: run a program in the network namespace only."""
    return [IP, "netns", "exec", ns, *argv]


def run(ns: str, argv: Sequence[str], *, check: bool = True, timeout: float | None = 60,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run *argv* inside namespace *ns* (``ip netns exec``), output captured as text."""
    return run_argv(exec_argv(ns, argv), stdin=stdin, check=check, timeout=timeout)


class HttpReply(NamedTuple):
    status: int  # 0: nothing answered (refused, timed out)
    content_type: str
    body: str  # as it came, not stripped


# Run by a Python in the namespace: the test process itself stays in the root namespace.
_HTTP_GET = """
import json, sys, urllib.error, urllib.request
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]))
except urllib.error.HTTPError as e:
    r = e
except OSError:
    print(json.dumps([0, "", ""])); sys.exit()
print(json.dumps([r.status, r.headers.get("Content-Type", ""), r.read().decode()]))
"""


def http_get(ns: str, url: str, timeout: float = 5.0) -> HttpReply:
    """GET *url* from inside namespace *ns* (e.g. an agent's /readyz on 127.0.0.1 there)."""
    out = run(ns, [sys.executable, "-c", _HTTP_GET, url, str(timeout)], timeout=timeout + 30).stdout
    status, content_type, body = json.loads(out)
    return HttpReply(int(status), str(content_type), str(body))


def list_netns() -> list[str]:
    """Names of all named network namespaces (``/run/netns``)."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def with_prefix(prefix: str) -> list[str]:
    """Named network namespaces whose name starts with *prefix*."""
    return [ns for ns in list_netns() if ns.startswith(prefix)]


def exists(ns: str) -> bool:
    return (NETNS_DIR / ns).exists()


def add(ns: str, tag: str | None = LAB_TAG, lo_up: bool = False) -> None:
    """Create namespace *ns*. With *tag* (which starts with :data:`LAB_TAG`) its ``lo``
    gets that alias, so a clean-up by prefix only touches namespaces the lab made."""
    run_argv([IP, "netns", "add", ns])
    if tag:  # not in a batch: the tag may hold spaces
        ip(ns, "link", "set", "dev", "lo", "alias", tag)
    if lo_up:
        ip(ns, "link", "set", "lo", "up")


def is_lab_netns(ns: str) -> bool:
    """True when *ns* carries the lab's tag (see :func:`add`)."""
    out = run_argv([IP, "-n", ns, "-o", "link", "show", "dev", "lo"], check=False).stdout
    return f"alias {LAB_TAG}" in out


def delete(ns: str) -> None:
    """Delete the namespace name; a no-op if it is already gone."""
    if exists(ns):
        run_argv([IP, "netns", "del", ns], check=False)
        if exists(ns):
            # `ip netns del` can fail half-way (mount busy); retry once after unmount.
            run_argv([IP, "netns", "del", ns])


def pids(ns: str) -> list[int]:
    """PIDs of every process whose network namespace is *ns*."""
    if not exists(ns):
        return []
    out = run_argv([IP, "netns", "pids", ns], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def add_veth(ns: str, name: str, peer_ns: str, peer_name: str, mtu: int = 1500) -> None:
    """Create veth *name* in *ns* with its peer *peer_name* directly in *peer_ns*.

    Both ends are created in lab namespaces (never in the root namespace, not even for a
    moment), so concurrent labs and the host system cannot see or clash with them.
    """
    ip(ns, "link", "add", name, "mtu", str(mtu), "type", "veth",
       "peer", "name", peer_name, "mtu", str(mtu), "netns", peer_ns)


def link_exists(ns: str, name: str) -> bool:
    return bool(ip(ns, "-o", "link", "show", "dev", name, check=False).strip())


def ifindex(ns: str, name: str) -> int:
    """Interface index of link *name* in *ns*."""
    return int(ip(ns, "-o", "link", "show", "dev", name).split(":", 1)[0])


def set_forwarding(ns: str) -> None:
    """IPv4 forwarding on in *ns* (a host that routes for its containers)."""
    run(ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])


def ping(ns: str, dst: str, count: int = 1, wait: float = 1.0, interval: float | None = None) -> bool:
    """True when ``ping -c count`` from *ns* to *dst* gets an answer."""
    argv = ["ping", "-n", "-q", "-c", str(count), "-W", f"{wait:g}"]
    if interval is not None:
        argv += ["-i", f"{interval:g}"]
    return run(ns, [*argv, dst], check=False, timeout=count * (interval or 1) + wait + 30).returncode == 0


class Namespaces:
    """The namespaces one rig created, in order: deleted last first by :meth:`delete_all`,
    also after a failure."""

    def __init__(self, tag: str | None = LAB_TAG) -> None:
        self.tag = tag
        self.names: list[str] = []

    def add(self, name: str, lo_up: bool = True) -> str:
        self.names.append(name)  # recorded first: a half-made namespace is removed too
        add(name, self.tag, lo_up=lo_up)
        return name

    def delete(self, name: str) -> None:
        delete(name)
        if name in self.names:
            self.names.remove(name)

    def delete_all(self) -> None:
        for name in reversed(self.names):
            run_argv([IP, "netns", "del", name], check=False)
        self.names.clear()
