"""Keeps flannel0's queue and the udp socket open while the agent restarts.

The udp backend forwards in the agent's own process, so an agent that dies (kill -9, a
crash, a restart) would drop every packet until the new one has started (~0.3 s). The agent
therefore hands its TUN file descriptor and UDP socket to a small keeper process (stdlib
only, started from this file). While the agent lives, the keeper just waits. When the
agent goes, the kernel keeps queueing packets on the still-open descriptors, and the next
agent takes them over (SCM_RIGHTS on an abstract unix socket, which is private to the
network namespace) and drains the queues: a short restart delays packets instead of
losing them. A keeper nobody takes over from within GRACE seconds exits.
"""

from __future__ import annotations

import array
import json
import os
import select
import socket
import subprocess
import sys
import time

GRACE = 30.0  # seconds a keeper waits for the next agent after the agent went away
_MAX_META = 4096


def socket_name(tun_name: str, port: int) -> bytes:
    """The abstract unix socket name (leading NUL: no file, scoped to the network namespace)."""
    return f"\0overlaynet-flannel/udp/{tun_name}/{port}".encode()


def take_over(tun_name: str, port: int, timeout: float = 1.0) -> tuple[int, int, dict] | None:
    """The (tun fd, socket fd, meta) a keeper holds for this device and port; None if no keeper."""
    fds = array.array("i")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        conn.connect(socket_name(tun_name, port))
        msg, ancdata, _flags, _addr = conn.recvmsg(_MAX_META, socket.CMSG_SPACE(2 * fds.itemsize))
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
        # The keeper closes its copies, then the connection: after EOF only we hold them.
        while conn.recv(64):
            pass
    except OSError:
        for fd in fds:
            os.close(fd)
        return None
    finally:
        conn.close()
    if len(fds) != 2:
        for fd in fds:
            os.close(fd)
        return None
    try:
        meta = json.loads(msg.decode())
    except ValueError:
        meta = {}
    return fds[0], fds[1], meta


class Keeper:
    """The agent's side: start a keeper for the current descriptors, stop it when they change."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lifeline: socket.socket | None = None

    def start(self, tun_fd: int, sock_fd: int, tun_name: str, port: int, meta: dict) -> None:
        """Run a keeper holding these descriptors (replacing ours, if one runs)."""
        self.stop()
        listener = _bind(socket_name(tun_name, port))
        if listener is None:
            return  # another keeper still holds the name: ours is only an optimisation
        mine, theirs = socket.socketpair()
        fds = (tun_fd, sock_fd, listener.fileno(), theirs.fileno())
        try:
            self._proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), *map(str, fds), json.dumps(meta)],
                pass_fds=fds, start_new_session=True, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        except OSError:
            mine.close()
        else:
            self._lifeline = mine  # closes when this process dies: the keeper's signal to act
        finally:
            listener.close()
            theirs.close()

    def stop(self) -> None:
        """Stop our keeper now (its descriptors are stale); kills by the PID we started."""
        if self._lifeline is not None:
            self._lifeline.close()
            self._lifeline = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None

    def release(self) -> None:
        """The agent is stopping: leave the keeper running for the next agent."""
        if self._lifeline is not None:
            self._lifeline.close()
            self._lifeline = None
        self._proc = None


def _bind(name: bytes, wait: float = 1.0) -> socket.socket | None:
    """Listen on name; a keeper we just took over from may take a moment to exit and free it."""
    deadline = time.monotonic() + wait
    while True:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(name)
        except OSError:
            listener.close()
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)
            continue
        listener.listen(1)
        return listener


def _serve(tun_fd: int, sock_fd: int, listen_fd: int, lifeline_fd: int, meta: str) -> None:
    listener = socket.socket(fileno=listen_fd)
    lifeline = socket.socket(fileno=lifeline_fd)
    # While the agent lives: refuse takers (two forwarders on one queue would split traffic).
    while True:
        readable, _w, _x = select.select([lifeline, listener], [], [])
        if lifeline in readable and not lifeline.recv(1):
            break
        if listener in readable:
            conn, _addr = listener.accept()
            conn.close()
    deadline = time.monotonic() + GRACE
    listener.settimeout(max(0.0, deadline - time.monotonic()))
    try:
        conn, _addr = listener.accept()
    except OSError:
        return  # nobody came: exit, closing the descriptors (flannel0 itself persists)
    with conn:
        conn.sendmsg([meta.encode()],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [tun_fd, sock_fd]))])
        os.close(tun_fd)  # before the connection closes: the taker relies on that order
        os.close(sock_fd)


if __name__ == "__main__":
    tun, sock, listen, lifeline = (int(arg) for arg in sys.argv[1:5])
    _serve(tun, sock, listen, lifeline, sys.argv[5])
