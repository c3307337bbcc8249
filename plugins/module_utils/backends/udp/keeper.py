"""Keeps flannel0's queue and the udp socket open while the agent restarts (outside systemd).

The udp backend forwards in the agent's own process, so an agent that dies (kill -9, a
crash, a restart) would drop every packet until the new one has started (~0.3 s). Under
systemd the descriptors go to the service manager's fd store (holder.py): a keeper would
die with the unit's cgroup. Elsewhere the agent hands its TUN file descriptor and UDP socket
to a small keeper process (stdlib only, started from this file). While the agent lives, the
keeper just waits. When the agent goes, the kernel keeps queueing packets on the still-open
descriptors, and the next agent takes them over and drains the queues: a short restart
delays packets instead of losing them. A keeper nobody takes over from within GRACE seconds
exits.

The hand-over is SCM_RIGHTS on a unix socket under KEEPER_DIR (/run/flannel/keeper, mode
0700, the socket 0600, root's), named after the network namespace (its inode), the device
and the port. Both sides check the other's SO_PEERCRED: the keeper gives the descriptors
only to a root process, the agent takes them only from a root keeper, and still validates
them (handover.py) before use.
"""

from __future__ import annotations

import array
import json
import os
import select
import socket
import stat
import struct
import subprocess
import sys
import time

GRACE = 30.0  # seconds a keeper waits for the next agent after the agent went away
KEEPER_DIR = "/run/flannel/keeper"
_MAX_META = 4096
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def socket_path(tun_name: str, port: int, directory: str = KEEPER_DIR) -> str:
    """The keeper's socket: one per network namespace (a filesystem socket is not scoped to
    one, unlike the abstract name it replaces), device and port."""
    netns = os.stat("/proc/self/ns/net").st_ino
    return os.path.join(directory, f"udp-{netns}-{tun_name}-{port}.sock")


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end, as the kernel recorded it at connect time."""
    _pid, uid, _gid = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return uid


def take_over(tun_name: str, port: int, timeout: float = 1.0,
              directory: str = KEEPER_DIR) -> tuple[int, int, dict] | None:
    """The (tun fd, socket fd, meta) a root keeper holds for this device and port; None if
    there is none (the caller validates the descriptors)."""
    fds = array.array("i")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        conn.connect(socket_path(tun_name, port, directory))
        if peer_uid(conn) != 0:
            return None  # not a keeper of ours: take nothing from it
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

    def __init__(self, directory: str = KEEPER_DIR) -> None:
        self.directory = directory
        self._proc: subprocess.Popen[bytes] | None = None
        self._lifeline: socket.socket | None = None

    def start(self, tun_fd: int, sock_fd: int, tun_name: str, port: int, meta: dict) -> None:
        """Run a keeper holding these descriptors (replacing ours, if one runs)."""
        self.stop()
        listener = _bind(self.directory, socket_path(tun_name, port, self.directory))
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


def _private_dir(directory: str) -> bool:
    """directory exists, is a real directory of root's, mode 0700 (made so if we can)."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        info = os.lstat(directory)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            return False  # a symlink or someone else's: never put the socket there
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.chmod(directory, 0o700)
    except OSError:
        return False
    return True


def _bind(directory: str, path: str, wait: float = 1.0) -> socket.socket | None:
    """Listen on path (0600); a keeper we just took over from may take a moment to exit, and
    a keeper that crashed leaves its socket file behind."""
    if not _private_dir(directory):
        return None
    deadline = time.monotonic() + wait
    while True:
        if _in_use(path):
            if time.monotonic() > deadline:
                return None  # another keeper still answers there
            time.sleep(0.02)
            continue
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            _unlink(path)
            old = os.umask(0o177)  # the socket is born 0600: no window with wider rights
            try:
                listener.bind(path)
            finally:
                os.umask(old)
        except OSError:
            listener.close()
            return None
        listener.listen(1)
        return listener


def _in_use(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.2)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _serve(tun_fd: int, sock_fd: int, listen_fd: int, lifeline_fd: int, meta: str) -> None:
    listener = socket.socket(fileno=listen_fd)
    lifeline = socket.socket(fileno=lifeline_fd)
    path = str(listener.getsockname())
    ours = _inode(path)  # the file our agent just bound: unlink it on exit only if still ours
    try:
        # While the agent lives: refuse takers (two forwarders on one queue would split traffic).
        while True:
            readable, _w, _x = select.select([lifeline, listener], [], [])
            if lifeline in readable and not lifeline.recv(1):
                break
            if listener in readable:
                conn, _addr = listener.accept()
                conn.close()
        taker = _accept_root(listener, time.monotonic() + GRACE)
        if taker is None:
            return  # nobody came: exit, closing the descriptors (flannel0 itself persists)
        _hand_over(taker, tun_fd, sock_fd, meta)
    finally:
        if ours is not None and _inode(path) == ours:
            _unlink(path)


def _inode(path: str) -> int | None:
    try:
        return os.lstat(path).st_ino
    except OSError:
        return None


def _accept_root(listener: socket.socket, deadline: float) -> socket.socket | None:
    """The first connection from a root process before deadline; others are closed."""
    while True:
        listener.settimeout(max(0.0, deadline - time.monotonic()))
        try:
            conn, _addr = listener.accept()
        except OSError:
            return None
        if peer_uid(conn) == 0:
            return conn
        conn.close()


def _hand_over(conn: socket.socket, tun_fd: int, sock_fd: int, meta: str) -> None:
    with conn:
        conn.sendmsg([meta.encode()],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [tun_fd, sock_fd]))])
        os.close(tun_fd)  # before the connection closes: the taker relies on that order
        os.close(sock_fd)


if __name__ == "__main__":
    tun, sock, listen, lifeline = (int(arg) for arg in sys.argv[1:5])
    _serve(tun, sock, listen, lifeline, sys.argv[5])
