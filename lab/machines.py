"""Realistic lab hosts: systemd-nspawn machines with systemd, sshd and docker (DESIGN §6).

A machine boots an overlayfs copy of the cached rootfs (``lab.rootfs``) inside a
network namespace that someone else created (``/run/netns/<netns_name>``): the machine
shares that namespace, so its underlay addresses are the namespace's addresses and its
sshd (on 0.0.0.0:22) is reached from the root namespace with
``ProxyCommand ip netns exec <netns_name> nc 127.0.0.1 22``.

Everything a machine owns lives in ``<state_dir>/<name>/``::

    upper/ work/   overlayfs layers above the read-only rootfs cache
    root/          the overlay mount, the machine's ``/``
    docker/        bind-mounted to /var/lib/docker (docker's overlay2 cannot sit on overlayfs)
    console.log    the machine's console (systemd's boot messages)
    machine.json   PIDs (with start times) so another process can stop the machine

plus a cgroup of its own, ``<our cgroup>/overlaynet-lab-<name>-<hash>`` (``lab.cgroups``).

Per machine and written at boot (never baked into the cache): ``/etc/hostname``,
``/etc/hosts``, ``/etc/resolv.conf`` (no DNS: fails fast instead of waiting),
``/etc/machine-id`` (derived from the name, so stable across reboots),
an ed25519 ssh host key (kept across reboots while ``upper/`` is kept), and root's
``authorized_keys``.

Processes are only ever signalled by PID, after checking that the PID still belongs
to the process that was started (its start time is recorded).

Python API::

    m = Machine("m1", "oflm-a", rootfs_cache=rootfs.ensure_rootfs(),
                state_dir="/some/dir", authorized_key=pubkey_text, hostname="m1")
    m.boot()                       # returns at once; the machine boots in the background
    m.wait_ready(timeout=60)       # sshd answers and systemd finished booting
    m.run(["systemctl", "is-active", "docker"]).stdout
    m.ssh_common_args(), m.ansible_host_vars(private_key_file)
    m.stop()                       # orderly halt, SIGKILL after a timeout, unmount, remove
    Machine.load(state_dir, "m1").stop()   # from another process
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import cgroups, procs
from .rootfs import MANIFEST, RootfsError, is_complete, remove_tree, umount_below

NETNS_DIR = Path("/run/netns")
NSPAWN_ENV_EXTRA = {
    # /proc/sys/net writable: the machine programs its own (namespaced) network
    "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network",
    # cgroup v2 inside, which docker 20.10 runs on
    "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1",
}
MACHINE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
}
SSH_OPTIONS = (
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR",
    "-o", "BatchMode=yes",
    "-o", "ConnectTimeout=10",
)
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class MachineError(RuntimeError):
    """A machine could not be booted, reached or stopped; the message says why."""


# ------------------------------------------------------------------------ processes


def _is_pid1_of_own_ns(pid: int) -> bool:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                ids = line.split()[1:]
                return len(ids) >= 2 and ids[-1] == "1"
    return False


def _is_mountpoint(path: Path) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == real for line in f)


def netns_connect(netns: str | Path, host: str, port: int, timeout: float = 1.0) -> bytes:
    """Connect to host:port inside a named netns and return the first bytes sent.

    Runs in a throw-away thread that joins the namespace (setns only affects the
    calling thread for network namespaces), so no process is spawned.
    """
    path = Path(netns) if str(netns).startswith("/") else NETNS_DIR / str(netns)
    box: dict[str, Any] = {}

    def probe() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({path}): {os.strerror(err)}")
            finally:
                os.close(fd)
            with socket.create_connection((host, port), timeout=timeout) as s:
                s.settimeout(timeout)
                box["data"] = s.recv(256)
        except Exception as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    t = threading.Thread(target=probe, name=f"netns-probe-{path.name}", daemon=True)
    t.start()
    t.join(timeout + 1)
    if "error" in box:
        raise box["error"]
    if "data" not in box:
        raise TimeoutError(f"no answer from {host}:{port} in {path.name}")
    return box["data"]


# -------------------------------------------------------------------------- machine


@dataclass(frozen=True)
class NspawnExtras:
    """More for systemd-nspawn: bind mounts (host path, machine path), read-only ones, and
    further arguments."""

    binds: Sequence[tuple[str | Path, str]] = ()
    binds_ro: Sequence[tuple[str | Path, str]] = ()
    args: Sequence[str] = ()


class Machine:
    """One systemd-nspawn machine in an existing network namespace."""

    def __init__(
        self,
        name: str,
        netns_name: str,
        rootfs_cache: str | Path,
        state_dir: str | Path,
        authorized_key: str | Sequence[str],
        hostname: str | None = None,
        *,
        machine_id: str | None = None,
        extras: NspawnExtras | None = None,
    ) -> None:
        if not name or not all(c.isalnum() or c in "-_" for c in name):
            raise MachineError(f"machine name {name!r} must be letters, digits, '-' or '_'")
        self.name = name
        self.netns_name = netns_name
        self.rootfs_cache = Path(rootfs_cache)
        self.state_dir = Path(state_dir)
        keys = [authorized_key] if isinstance(authorized_key, str) else list(authorized_key)
        self.authorized_keys = [k.strip() for k in keys if k.strip()]
        self.hostname = hostname or name
        self.machine_id = machine_id or hashlib.sha256(f"overlaynet-lab:{name}".encode()).hexdigest()[:32]
        self.extras = extras or NspawnExtras()

        self.dir = self.state_dir / name
        self.upper = self.dir / "upper"
        self.work = self.dir / "work"
        self.root = self.dir / "root"
        self.docker_dir = self.dir / "docker"
        self.console_log = self.dir / "console.log"
        self.state_file = self.dir / "machine.json"

        self.nspawn_pid: int | None = None
        self.nspawn_start: int | None = None
        self._leader_pid: int | None = None
        self.leader_start: int | None = None
        self.boot_started: float | None = None  # time.time() of the nspawn start
        self.boot_to_sshd: float | None = None  # seconds from nspawn start to ssh banner
        self.boot_to_running: float | None = None  # ... to `is-system-running` done
        self.system_state: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._boot_t0: float | None = None  # time.monotonic() of the nspawn start

    # ------------------------------------------------------------------ properties

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns_name

    @property
    def cgroup(self) -> Path:
        """The cgroup v2 directory nspawn starts in (``lab.cgroups`` says why)."""
        return cgroups.machine_cgroup(self.name, self.state_dir)

    @property
    def leader_pid(self) -> int:
        """PID (in the root namespace) of the machine's systemd (its PID 1)."""
        if not self._leader_pid or not procs.same_process(self._leader_pid, self.leader_start):
            raise MachineError(f"machine {self.name} is not running")
        return self._leader_pid

    def is_running(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            return False
        return procs.same_process(self.nspawn_pid, self.nspawn_start)

    def __repr__(self) -> str:
        return f"Machine({self.name!r}, netns={self.netns_name!r}, pid={self.nspawn_pid})"

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------ state

    def _save(self) -> None:
        data = {
            "name": self.name,
            "netns_name": self.netns_name,
            "rootfs_cache": str(self.rootfs_cache),
            "state_dir": str(self.state_dir),
            "hostname": self.hostname,
            "machine_id": self.machine_id,
            "authorized_keys": self.authorized_keys,
            "nspawn_pid": self.nspawn_pid,
            "nspawn_start": self.nspawn_start,
            "leader_pid": self._leader_pid,
            "leader_start": self.leader_start,
            "boot_started": self.boot_started,
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, self.state_file)

    def _adopt_state(self) -> None:
        """Take over the PIDs of a machine.json left by another Machine object/process."""
        if self.nspawn_pid or not self.state_file.exists():
            return
        with contextlib.suppress(ValueError, KeyError, OSError):
            d = json.loads(self.state_file.read_text())
            self.nspawn_pid, self.nspawn_start = d["nspawn_pid"], d["nspawn_start"]
            self._leader_pid, self.leader_start = d["leader_pid"], d["leader_start"]

    @classmethod
    def load(cls, state_dir: str | Path, name: str) -> Machine:
        """Re-attach to a machine booted by another process (to run commands or stop it)."""
        f = Path(state_dir) / name / "machine.json"
        try:
            d = json.loads(f.read_text())
        except FileNotFoundError as e:
            raise MachineError(f"no machine {name!r} under {state_dir}") from e
        m = cls(
            d["name"], d["netns_name"], d["rootfs_cache"], d["state_dir"],
            d["authorized_keys"], d["hostname"], machine_id=d["machine_id"],
        )
        m.nspawn_pid, m.nspawn_start = d["nspawn_pid"], d["nspawn_start"]
        m._leader_pid, m.leader_start = d["leader_pid"], d["leader_start"]
        m.boot_started = d.get("boot_started")
        return m

    # ------------------------------------------------------------------------- boot

    def _mount_overlay(self) -> None:
        for d in (self.upper, self.work, self.root, self.docker_dir):
            d.mkdir(parents=True, exist_ok=True)
        if _is_mountpoint(self.root):
            return
        opts = f"lowerdir={self.rootfs_cache},upperdir={self.upper},workdir={self.work}"
        r = subprocess.run(
            ["mount", "-t", "overlay", f"overlay-{self.name}", "-o", opts, str(self.root)],
            capture_output=True, text=True,
        )
        if r.returncode != 0:
            raise MachineError(f"{self.name}: mounting the overlay failed: {r.stderr.strip()}")
        # docker's overlay2 does not work on top of overlayfs
        fstype = subprocess.run(
            ["stat", "-f", "-c", "%T", str(self.docker_dir)], capture_output=True, text=True
        ).stdout.strip()
        if fstype == "overlayfs":
            raise MachineError(
                f"{self.docker_dir} is on overlayfs, where docker cannot run; "
                "put the state directory on a plain filesystem"
            )

    def _personalise(self) -> None:
        r = self.root
        (r / "etc/hostname").write_text(self.hostname + "\n")
        (r / "etc/hosts").write_text(
            f"127.0.0.1\tlocalhost\n127.0.1.1\t{self.hostname}\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
        )
        resolv = r / "etc/resolv.conf"
        if resolv.is_symlink():
            resolv.unlink()
        # no DNS server in the lab: fail at once instead of waiting for time-outs
        resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        (r / "etc/machine-id").write_text(self.machine_id + "\n")
        hostkey = r / "etc/ssh/ssh_host_ed25519_key"
        if not hostkey.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{self.hostname}",
                 "-f", str(hostkey)],
                check=True, capture_output=True,
            )
        ssh = r / "root/.ssh"
        ssh.mkdir(mode=0o700, exist_ok=True)
        ak = ssh / "authorized_keys"
        ak.write_text("".join(k + "\n" for k in self.authorized_keys))
        ak.chmod(0o600)

    def nspawn_argv(self) -> list[str]:
        argv = [
            "systemd-nspawn",
            "--quiet",
            "--boot",
            "--register=no",
            "--keep-unit",
            f"--machine={self.name}",
            f"--hostname={self.hostname}",
            f"--uuid={self.machine_id}",
            f"--directory={self.root}",
            f"--network-namespace-path={self.netns_path}",
            "--capability=all",
            "--system-call-filter=@keyring bpf",
            "--resolv-conf=off",
            "--timezone=off",
            "--link-journal=no",
            "--console=read-only",
            f"--bind={self.docker_dir}:/var/lib/docker",
        ]
        argv += [f"--bind={a}:{b}" for a, b in self.extras.binds]
        argv += [f"--bind-ro={a}:{b}" for a, b in self.extras.binds_ro]
        return argv + list(self.extras.args)

    def boot(self, leader_timeout: float = 15.0) -> None:
        """Mount the overlay, personalise it and start systemd-nspawn in the background.

        Returns once the machine's PID 1 exists; use ``wait_ready`` for sshd.
        """
        self._adopt_state()
        if self.is_running():
            raise MachineError(
                f"machine {self.name} is running already (systemd-nspawn pid {self.nspawn_pid}); "
                f"stop it first (Machine.load({str(self.state_dir)!r}, {self.name!r}).stop())"
            )
        if not self.netns_path.exists():
            raise MachineError(f"{self.name}: network namespace {self.netns_path} does not exist; create it first")
        if not is_complete(self.rootfs_cache):
            raise MachineError(
                f"{self.rootfs_cache} is no complete lab rootfs (no {MANIFEST}); build it with python -m lab.rootfs"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self._mount_overlay()
            self._personalise()
            cgroups.create(self.cgroup)
            env = {**MACHINE_ENV, **NSPAWN_ENV_EXTRA}
            log = open(self.console_log, "ab")
            try:
                self.boot_started = time.time()
                t0 = time.monotonic()
                self._proc = subprocess.Popen(
                    cgroups.exec_in_argv(self.cgroup, self.nspawn_argv()),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True,
                )
            finally:
                log.close()
            self.nspawn_pid = self._proc.pid
            self.nspawn_start = procs.start_time(self._proc.pid)
            self._boot_t0 = t0
            self._save()
            deadline = t0 + leader_timeout
            while True:
                if self._proc.poll() is not None:
                    raise MachineError(
                        f"{self.name}: systemd-nspawn exited with code {self._proc.returncode}:\n{self.console_tail()}"
                    )
                leader = [p for p in procs.children(self._proc.pid) if _is_pid1_of_own_ns(p)]
                if leader:
                    self._leader_pid = leader[0]
                    self.leader_start = procs.start_time(leader[0])
                    break
                if time.monotonic() > deadline:
                    raise MachineError(f"{self.name}: no container PID 1 after {leader_timeout:.0f} s")
                time.sleep(0.01)
            self._save()
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop(timeout=5, remove=False)
            raise

    def console_tail(self, lines: int = 40) -> str:
        try:
            text = self.console_log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no console log)"
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------------------ ready

    def wait_ready(self, timeout: float = 60.0, *, system_running: bool = True) -> float:
        """Wait until sshd answers on 127.0.0.1:22 in the netns (and, by default, until
        ``systemctl is-system-running --wait`` returns). Returns boot-to-sshd seconds.

        A ``degraded`` system is accepted (``system_state`` tells, ``failed_units()``
        lists why); ``starting``/``stopping``/``offline`` after the timeout is an error.
        """
        t_start = self._boot_t0 or time.monotonic()
        deadline = time.monotonic() + timeout
        last_err: Exception | None = None
        while True:
            if not self.is_running():
                raise MachineError(f"{self.name}: the machine stopped while booting:\n{self.console_tail()}")
            try:
                banner = netns_connect(self.netns_path, "127.0.0.1", 22, timeout=1.0)
                if banner.startswith(b"SSH-"):
                    break
            except OSError as e:
                last_err = e
            if time.monotonic() > deadline:
                raise MachineError(
                    f"{self.name}: sshd did not answer in netns {self.netns_name} within {timeout:.0f} s "
                    f"({last_err}):\n{self.console_tail()}"
                )
            time.sleep(0.02)
        self.boot_to_sshd = time.monotonic() - t_start
        if system_running:
            left = max(1.0, deadline - time.monotonic())
            r = self.run(["systemctl", "is-system-running", "--wait"], check=False, timeout=left)
            self.system_state = r.stdout.strip()
            self.boot_to_running = time.monotonic() - t_start
            if self.system_state not in ("running", "degraded"):
                raise MachineError(
                    f"{self.name}: systemd state is {self.system_state!r} after {timeout:.0f} s; "
                    f"failed units: {self.failed_units()}"
                )
        return self.boot_to_sshd

    def failed_units(self) -> list[str]:
        r = self.run(["systemctl", "--failed", "--no-legend", "--plain"], check=False)
        return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]

    # -------------------------------------------------------------------------- run

    def run(
        self,
        cmd: str | Sequence[str],
        *,
        input: str | bytes | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the machine (all its namespaces, via nsenter).

        ``cmd`` is an argv list, or a string for ``sh -c``. stdout/stderr come back as
        text; ``input`` may be bytes (e.g. a tar for ``docker import -``).
        """
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        full = ["nsenter", f"--target={self.leader_pid}", "--all", "--", *argv]
        data = input.encode() if isinstance(input, str) else input
        try:
            r = subprocess.run(full, input=data, capture_output=True, env=MACHINE_ENV, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise MachineError(f"{self.name}: {shlex.join(argv)} timed out after {timeout:.0f} s") from e
        res = subprocess.CompletedProcess(
            argv, r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
        )
        if check and r.returncode != 0:
            raise MachineError(
                f"{self.name}: {shlex.join(argv)} failed with exit code {r.returncode}:\n"
                f"{res.stdout[-2000:]}{res.stderr[-2000:]}"
            )
        return res

    # -------------------------------------------------------------------------- ssh

    def proxy_command(self) -> str:
        return f"ip netns exec {self.netns_name} nc 127.0.0.1 22"

    def ssh_common_args(self) -> str:
        """``ansible_ssh_common_args`` / extra ``ssh`` options to reach this machine."""
        return " ".join([f"-o ProxyCommand='{self.proxy_command()}'", *(
            f"{SSH_OPTIONS[i]} {SSH_OPTIONS[i + 1]}" for i in range(0, len(SSH_OPTIONS), 2)
        )])

    def ssh_argv(self, private_key: str | Path, cmd: str | Sequence[str] | None = None) -> list[str]:
        """An ``ssh`` command line that runs ``cmd`` on the machine as root."""
        argv = ["ssh", "-i", str(private_key), "-o", f"ProxyCommand={self.proxy_command()}", *SSH_OPTIONS,
                f"root@{self.hostname}"]
        if cmd is not None:
            argv.append(cmd if isinstance(cmd, str) else shlex.join(cmd))
        return argv

    def ansible_host_vars(self, private_key: str | Path) -> dict[str, str]:
        """Inventory variables for this machine (the ProxyCommand carries the netns)."""
        return {
            "ansible_host": self.hostname,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(private_key),
            "ansible_ssh_common_args": self.ssh_common_args(),
            "ansible_python_interpreter": "/usr/bin/python3",
        }

    # ------------------------------------------------------------------------- stop

    def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None:
                if self._proc.poll() is not None:
                    return True
            elif not procs.same_process(self.nspawn_pid, self.nspawn_start):
                return True
            time.sleep(0.02)
        return not self.is_running()

    def _halt(self, timeout: float) -> None:
        """SIGTERM to nspawn (an orderly halt); SIGKILL to PID 1 and nspawn after *timeout*."""
        procs.signal_pid(self.nspawn_pid, self.nspawn_start, signal.SIGTERM)
        if self._wait_gone(timeout):
            return
        if self._leader_pid:
            procs.signal_pid(self._leader_pid, self.leader_start, signal.SIGKILL)
        procs.signal_pid(self.nspawn_pid, self.nspawn_start, signal.SIGKILL)
        if not self._wait_gone(10):
            raise MachineError(f"{self.name}: systemd-nspawn (pid {self.nspawn_pid}) survived SIGKILL")

    def _kill_leftover_leader(self) -> None:
        """The leader may outlive a SIGKILLed nspawn for a moment."""
        if self._leader_pid and procs.same_process(self._leader_pid, self.leader_start):
            procs.signal_pid(self._leader_pid, self.leader_start, signal.SIGKILL)
            procs.wait_gone([self._leader_pid], {self._leader_pid: self.leader_start}, 10)

    def _release_files(self, remove: bool) -> None:
        """Unmount the overlay; delete the machine's directory, or (not *remove*) keep it
        with its state for a reboot."""
        if self.dir.exists():
            try:
                umount_below(self.root)
            except RootfsError as e:
                raise MachineError(f"{self.name}: {e}") from e
            if remove:
                remove_tree(self.dir)
            else:
                self._save()

    def stop(self, timeout: float = 20.0, *, remove: bool = True) -> None:
        """Halt the machine and clean up.

        SIGTERM to systemd-nspawn makes it send SIGRTMIN+3 to the machine's systemd
        (an orderly halt); after ``timeout`` s the machine's PID 1 (which takes its
        whole PID namespace along) and nspawn get SIGKILL. Then the overlay is
        unmounted and, with ``remove`` (default), the machine's directory is deleted;
        ``remove=False`` keeps upper/ and docker/ so the next ``boot`` is a reboot.
        Also cleans up after a crashed controller (PIDs are taken from machine.json).
        Stop machines before deleting their network namespace: a running machine
        keeps the namespace alive.
        """
        self._adopt_state()
        if self.is_running():
            self._halt(timeout)
        self._kill_leftover_leader()
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=1)
        self._leader_pid = self.leader_start = None
        self.nspawn_pid = self.nspawn_start = None
        try:
            cgroups.remove(self.cgroup)
        except cgroups.CgroupError as e:
            raise MachineError(f"{self.name}: {e}") from e
        self._release_files(remove)
        # nspawn's per-machine propagation directory (empty once it has exited)
        with contextlib.suppress(OSError):
            os.rmdir(f"/run/systemd/nspawn/propagate/{self.name}")
