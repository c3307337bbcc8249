"""etcd members of the lab (Debian's etcd 3.4): one namespace ``<prefix>etcd<i>`` each.

Member *i* (1-based) listens on ``<subnet>+1+i`` (192.168.81.2, .3, .4 by default):
clients on port 2379 (and on 127.0.0.1:2379 inside its namespace), peers on 2380.
Its data directory is ``<state dir>/etcd/etcd<i>``, so a stopped member restarts with
its data.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from . import netns, procs
from .state import LabError

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
CLIENT_PORT = 2379
PEER_PORT = 2380


def member_name(i: int) -> str:
    return f"etcd{i}"


def client_url(address: str) -> str:
    return f"http://{address}:{CLIENT_PORT}"


def peer_url(address: str) -> str:
    return f"http://{address}:{PEER_PORT}"


def member_argv(member: dict[str, Any], members: list[dict[str, Any]], token: str) -> list[str]:
    """The etcd command line of *member*; ``--initial-*`` flags are ignored by etcd once
    the data directory exists, so the same argv restarts a stopped member."""
    addr = member["address"]
    cluster = ",".join(f"{m['name']}={peer_url(m['address'])}" for m in members)
    return [
        ETCD,
        "--name", member["name"],
        "--data-dir", member["data_dir"],
        "--listen-client-urls", f"{client_url(addr)},http://127.0.0.1:{CLIENT_PORT}",
        "--advertise-client-urls", client_url(addr),
        "--listen-peer-urls", peer_url(addr),
        "--initial-advertise-peer-urls", peer_url(addr),
        "--initial-cluster", cluster,
        "--initial-cluster-state", "new",
        "--initial-cluster-token", token,
        "--logger", "zap",
        "--log-outputs", "stderr",
    ]


def start(member: dict[str, Any], members: list[dict[str, Any]], token: str) -> dict[str, Any]:
    """Start *member* inside its namespace; return its process record."""
    Path(member["data_dir"]).parent.mkdir(parents=True, exist_ok=True)
    argv = netns.exec_argv(member["netns"], member_argv(member, members, token))
    # `ip netns exec` execs etcd in place, so the PID is etcd's own.
    return procs.spawn(argv, Path(member["log"]))


def health(ns: str, endpoints: list[str], timeout: float = 1.0) -> tuple[bool, str]:
    """``etcdctl endpoint health`` for *endpoints*, run inside namespace *ns*."""
    env = dict(procs.CLEAN_ENV, ETCDCTL_API="3")
    argv = netns.exec_argv(ns, [
        ETCDCTL, "--endpoints", ",".join(endpoints),
        "--dial-timeout", f"{timeout}s", "--command-timeout", f"{timeout}s",
        "endpoint", "health",
    ])
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def wait_healthy(members: list[dict[str, Any]], records: dict[str, Any],
                 only: list[dict[str, Any]] | None = None, timeout: float = 30.0) -> None:
    """Wait until every member in *only* (default: all) answers ``endpoint health``.

    Fails early, with the end of its log, when a member process has exited.
    """
    check = only if only is not None else members
    endpoints = [client_url(m["address"]) for m in check]
    ns = check[0]["netns"]
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        for m in check:
            rec = records.get(f"etcd:{m['name']}")
            if not procs.alive(rec):
                raise LabError(f"etcd member {m['name']} exited while starting; its log "
                               f"{m['log']} ends with:\n{_tail(m['log'])}")
        ok, last = health(ns, endpoints)
        if ok:
            return
        if time.monotonic() >= deadline:
            raise LabError(f"etcd {endpoints} not healthy after {timeout:.0f}s: {last}")
        time.sleep(0.05)


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return "(no log)"


def remove_data(member: dict[str, Any]) -> None:
    if os.path.isdir(member["data_dir"]):
        shutil.rmtree(member["data_dir"], ignore_errors=True)
