"""wireguard-go, where the kernel has no wireguard: it creates the TUN device and serves
its UAPI socket. It runs in the foreground (``WG_PROCESS_FOREGROUND=1``) as the agent's
child, in a session of its own, so it outlives an agent restart (the device, its peers and
their sessions stay) and is stopped only by PID: the PID the socket's server reports.
Deleting the device also ends it (wireguard-go exits when its TUN goes away).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import time

from ...errors import HostNetworkError
from .uapi import Uapi

log = logging.getLogger(__name__)
_START_TIMEOUT = 10.0


class WireguardGo:
    """The wireguard-go process of one device (started here or by an earlier agent)."""

    def __init__(self, device: str, netns: str | None = None) -> None:
        self.device = device
        self.netns = netns  # a named netns (tests, the lab): started inside it
        self.uapi = Uapi(device)
        self._child: subprocess.Popen[bytes] | None = None

    def running(self) -> bool:
        """Whether a wireguard-go answers on the device's socket (reaps our child if it died)."""
        if self._child is not None and self._child.poll() is not None:
            log.warning("wireguard-go for %s (pid %d) exited with %s", self.device, self._child.pid,
                        self._child.returncode)
            self._child = None
        try:
            self.uapi.get()
        except HostNetworkError:
            return False
        return True

    def start(self) -> int:
        """Start wireguard-go for the device; return once its socket answers. Its PID."""
        binary = shutil.which("wireguard-go")
        if binary is None:
            raise HostNetworkError(f"the kernel has no wireguard and wireguard-go is not installed; "
                                   f"install wireguard-go (or load the wireguard module) for {self.device}")
        argv = [binary, self.device]
        if self.netns is not None:  # nsenter execs wireguard-go itself: the PID stays its own
            argv = ["nsenter", f"--net=/var/run/netns/{self.netns}", *argv]
        env = {**os.environ, "WG_PROCESS_FOREGROUND": "1", "LOG_LEVEL": "error"}
        try:
            self._child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            raise HostNetworkError(f"cannot start wireguard-go for {self.device}: {exc.strerror}") from None
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._child.poll() is not None:
                raise HostNetworkError(f"wireguard-go for {self.device} exited with {self._child.returncode} "
                                       "at start; see its messages above (is /dev/net/tun there?)")
            if self.running():
                return self._child.pid
            time.sleep(0.05)
        self.stop()
        raise HostNetworkError(f"wireguard-go for {self.device} did not open {self.uapi.sock_path} "
                               f"within {_START_TIMEOUT:g}s")

    def pid(self) -> int | None:
        try:
            return self.uapi.server_pid()
        except HostNetworkError:
            return self._child.pid if self._child is not None and self._child.poll() is None else None

    def stop(self) -> None:
        """SIGTERM the process by its PID, SIGKILL after 5 s."""
        pid = self.pid()
        if pid is None:
            return
        _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and _alive(pid, self._child):
            time.sleep(0.05)
        if _alive(pid, self._child):
            _signal(pid, signal.SIGKILL)
        if self._child is not None:
            self._child.wait(5)
            self._child = None


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int, child: subprocess.Popen[bytes] | None) -> bool:
    if child is not None and child.pid == pid:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno != errno.ESRCH
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Exited, waiting for its parent (another object's child, or an earlier agent's) to reap it."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rpartition(")")[2].split()[:1] == ["Z"]
    except OSError:
        return False
