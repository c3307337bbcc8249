"""Network namespaces, veths and bridges, through the ``ip`` command (argv lists, no shell).

Safety rule, enforced here: every link/address/route command runs with ``ip -n <ns>``
inside a lab namespace. Nothing in this module can change the root namespace's links,
addresses or routes; the only root-level operations are ``ip netns add/del/list/pids``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from .state import LabError

IP = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "ip"
NETNS_DIR = Path("/run/netns")


def _run(argv: Sequence[str], stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        shown = " ".join(argv)
        detail = (proc.stderr or proc.stdout).strip()
        if stdin:
            detail += "\n  batch was:\n    " + stdin.strip().replace("\n", "\n    ")
        raise LabError(f"`{shown}` failed (exit {proc.returncode}): {detail}")
    return proc.stdout


def ip(ns: str, *args: str, check: bool = True) -> str:
    """Run ``ip -n <ns> args...``; *ns* is mandatory, so the root namespace is never touched."""
    if not ns:
        raise LabError("internal error: ip command without a namespace")
    return _run([IP, "-n", ns, *args], check=check)


def ip_batch(ns: str, commands: Iterable[str]) -> None:
    """Run several ``ip`` commands (one string each, no ``ip`` word) in namespace *ns*."""
    text = "".join(f"{c}\n" for c in commands)
    if text:
        _run([IP, "-n", ns, "-batch", "-"], stdin=text)


def list_netns() -> list[str]:
    """Names of all named network namespaces (``/run/netns``)."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def exists(ns: str) -> bool:
    return (NETNS_DIR / ns).exists()


LAB_TAG = "overlaynet-flannel-lab"


def add(ns: str, tag: str = LAB_TAG) -> None:
    """Create namespace *ns* and tag it: its ``lo`` gets the alias *tag* (which starts
    with :data:`LAB_TAG`), so a clean-up by prefix only touches namespaces the lab made."""
    _run([IP, "netns", "add", ns])
    ip(ns, "link", "set", "dev", "lo", "alias", tag)


def is_lab_netns(ns: str) -> bool:
    """True when *ns* carries the lab's tag (see :func:`add`)."""
    out = _run([IP, "-n", ns, "-o", "link", "show", "dev", "lo"], check=False)
    return f"alias {LAB_TAG}" in out


def delete(ns: str) -> None:
    """Delete the namespace name; a no-op if it is already gone."""
    if exists(ns):
        _run([IP, "netns", "del", ns], check=False)
        if exists(ns):
            # `ip netns del` can fail half-way (mount busy); retry once after unmount.
            _run([IP, "netns", "del", ns])


def pids(ns: str) -> list[int]:
    """PIDs of every process whose network namespace is *ns*."""
    if not exists(ns):
        return []
    out = _run([IP, "netns", "pids", ns], check=False)
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


def exec_argv(ns: str, argv: Sequence[str]) -> list[str]:
    """``ip netns exec <ns> argv...``: run a program in the network namespace only."""
    return [IP, "netns", "exec", ns, *argv]
