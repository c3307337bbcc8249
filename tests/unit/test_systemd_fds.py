"""systemd's fd store protocol: what goes over NOTIFY_SOCKET, and what a restarted process
makes of LISTEN_FDS (in a child process, where fds 3 and 4 are really the ones passed)."""

from __future__ import annotations

import array
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.overlaynet.flannel.plugins.module_utils import systemd_fds

REPO = Path(__file__).resolve().parents[2]


def receiver(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    return sock


def recv_with_fds(sock: socket.socket) -> tuple[str, list[int]]:
    fds = array.array("i")
    msg, ancdata, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(8 * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return msg.decode(), list(fds)


def test_store_sends_the_descriptor_with_its_name_and_remove_drops_the_name(tmp_path):
    path = str(tmp_path / "notify")
    env = {"NOTIFY_SOCKET": path}
    with receiver(path) as sock, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        assert systemd_fds.store("udp-socket", [udp.fileno()], env)
        msg, fds = recv_with_fds(sock)
        assert msg == "FDSTORE=1\nFDNAME=udp-socket"
        assert len(fds) == 1
        # the very socket, not a copy of its address: same inode on the socket filesystem
        assert os.fstat(fds[0]).st_ino == os.fstat(udp.fileno()).st_ino
        os.close(fds[0])
        assert systemd_fds.remove("udp-socket", env)
        assert recv_with_fds(sock) == ("FDSTOREREMOVE=1\nFDNAME=udp-socket", [])


def test_names_systemd_would_reject_are_refused_and_nothing_is_sent_without_notify_socket():
    for bad in ("", "a:b", "x" * 256, "tab\there"):
        with pytest.raises(ValueError):
            systemd_fds.store(bad, [0], {"NOTIFY_SOCKET": "/nonexistent"})
    assert systemd_fds.store("udp-tun", [0], {}) is False


def test_store_size_needs_a_notify_socket_and_a_positive_size():
    assert systemd_fds.store_size({"NOTIFY_SOCKET": "@x", "FDSTORE": "4"}) == 4
    assert systemd_fds.store_size({"NOTIFY_SOCKET": "/run/x", "FLANNELD_FDSTORE": "2"}) == 2
    assert systemd_fds.store_size({"FLANNELD_FDSTORE": "4"}) == 0  # not under systemd
    assert systemd_fds.store_size({"NOTIFY_SOCKET": "/run/x", "FLANNELD_FDSTORE": "0"}) == 0
    assert systemd_fds.store_size({"NOTIFY_SOCKET": "/run/x", "FLANNELD_FDSTORE": "-1"}) == 0
    assert systemd_fds.store_size({"NOTIFY_SOCKET": "/run/x"}) == 0


CHILD = """
import fcntl, json, os, sys
sys.path.insert(0, sys.argv[1])
a, b = int(sys.argv[2]), int(sys.argv[3])
os.dup2(a, 3, inheritable=True); os.dup2(b, 4, inheritable=True)
os.environ.update(LISTEN_PID=sys.argv[4] or str(os.getpid()), LISTEN_FDS="2", LISTEN_FDNAMES=sys.argv[5])
from ansible_collections.overlaynet.flannel.plugins.module_utils import systemd_fds
got = systemd_fds.Received()
out = {"names": got.names(), "env": [v for v in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES") if v in os.environ]}
claimed = got.claim("udp-tun")
out["tun"] = claimed
out["cloexec"] = [bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC) for fd in claimed]
out["again"] = got.claim("udp-tun")
out["unclaimed"] = got.close_unclaimed({})
out["closed"] = [not os.path.exists(f"/proc/self/fd/{fd}") for fd in (4,)]
print(json.dumps(out))
"""


def run_child(names: str, listen_pid: str = "") -> dict:
    r, w = os.pipe()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            out = subprocess.run([sys.executable, "-c", CHILD, str(REPO / "build" / "collections"), str(r),
                                  str(udp.fileno()), listen_pid, names],
                                 pass_fds=(r, udp.fileno()), capture_output=True, text=True, check=True, timeout=30)
        finally:
            os.close(r)
            os.close(w)
    return json.loads(out.stdout)


def test_received_descriptors_by_name_once_each_cloexec_and_the_environment_cleared():
    got = run_child("udp-tun:udp-socket")
    assert got["names"] == ["udp-socket", "udp-tun"]
    assert got["env"] == []  # children of the agent (iptables, a keeper) must not see them
    assert got["tun"] == [3] and got["cloexec"] == [True]
    assert got["again"] == []
    assert got["unclaimed"] == ["udp-socket"] and got["closed"] == [True]


def test_descriptors_meant_for_another_process_are_left_alone():
    got = run_child("udp-tun:udp-socket", listen_pid="1")
    assert got["names"] == [] and got["tun"] == []
    assert got["env"] == []
